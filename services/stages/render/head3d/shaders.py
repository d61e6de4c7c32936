"""GLSL sources of `head3d`: the lit head (lighting, skin/lip/brow paint, eyes) and a depth pass.

The lighting lives here: a key, a fill and a rim light plus a hemisphere ambient, evaluated per
vertex, with the baked visibility (`visibility.py`) darkening the inside of the mouth. The
vertex inputs match `surface.VERTEX_LAYOUT`; the depth pass is what the visibility bake draws.
"""

# Lighting is per vertex (Gouraud) and only colour and the eyes are per fragment: llvmpipe shades
# every MSAA sample, so fragment work is what the frame time scales with, and the head's
# mesh is dense enough for smooth diffuse light. Colours are handled with gamma 2 (square /
# sqrt), close enough to sRGB and cheaper than pow.
VERTEX_SHADER = """
#version 330
uniform mat4 u_view_proj;
uniform mat4 u_model;
uniform vec3 u_cam_pos;
in vec3 in_pos;
in vec3 in_normal;
in vec3 in_albedo;
in float in_skin;
in float in_lip;
in float in_brow;
in vec3 in_eye;
in float in_light;
out vec3 v_albedo;
out float v_skin;
out float v_lip;
out float v_brow;
out vec3 v_eye;
out vec3 v_diffuse;
out float v_spec;
out vec3 v_normal;
out vec3 v_view;
const vec3 KEY_DIR = vec3(0.3668, 0.4483, 0.8151);  // normalize(0.45, 0.55, 1.0)
const vec3 FILL_DIR = vec3(-0.7548, 0.1078, 0.647);
const vec3 RIM_DIR = vec3(0.0, 0.5145, -0.8575);
void main() {
    vec4 world = u_model * vec4(in_pos, 1.0);
    vec3 n = normalize(mat3(u_model) * in_normal);  // rotation only: no inverse-transpose
    vec3 view = normalize(u_cam_pos - world.xyz);
    // A surface seen from behind its normal is the inside of the mouth or head: shade it as a
    // dark cavity. Judged by the normal, not the winding, since rigs often mix windings.
    float facing = dot(n, view);
    float cavity = mix(0.12, 1.0, smoothstep(-0.15, 0.05, facing));
    if (facing < 0.0) { n = -n; }
    float key = max(dot(n, KEY_DIR), 0.0);
    float fill = max(dot(n, FILL_DIR), 0.0);
    float grazing = 1.0 - max(dot(n, view), 0.0);
    float rim = grazing * grazing * grazing * max(dot(n, RIM_DIR) + 0.5, 0.0);
    float sky = 0.5 + 0.5 * n.y;  // hemisphere ambient: brighter from above
    // in_light: baked visibility from the camera side; ~0 inside the mouth and behind the head.
    float occlusion = mix(0.04, 1.0, in_light * in_light) * cavity;
    v_diffuse = (vec3(1.0, 0.96, 0.9) * key * 1.05
               + vec3(0.75, 0.82, 1.0) * fill * 0.35
               + mix(vec3(0.10, 0.09, 0.09), vec3(0.22, 0.23, 0.26), sky)
               + vec3(1.0, 0.97, 0.94) * rim * 0.15) * occlusion;
    vec3 h = normalize(KEY_DIR + view);
    // Painted brows are hair: matte, or the key highlight greys them out.
    v_spec = pow(max(dot(n, h), 0.0), 24.0) * 0.06 * key * (1.0 - in_brow) * occlusion;
    v_albedo = in_albedo * in_albedo;
    v_skin = in_skin;
    v_lip = in_lip;
    v_brow = in_brow;
    v_eye = in_eye;
    v_normal = n;
    v_view = view;
    gl_Position = u_view_proj * world;
}
"""

FRAGMENT_SHADER = """
#version 330
uniform vec3 u_skin;  // linear
in vec3 v_albedo;
in float v_skin;
in float v_lip;
in float v_brow;
in vec3 v_eye;
in vec3 v_diffuse;
in float v_spec;
in vec3 v_normal;
in vec3 v_view;
out vec4 f_color;
const vec3 IRIS = vec3(0.13, 0.058, 0.02);
const vec3 SCLERA = vec3(0.81, 0.77, 0.70);
const vec3 KEY_DIR = vec3(0.3668, 0.4483, 0.8151);
void main() {
    vec3 face = mix(mix(u_skin, u_skin * vec3(0.78, 0.42, 0.42), v_lip),
                    u_skin * vec3(0.12, 0.08, 0.06), v_brow);
    vec3 base = mix(v_albedo, face, v_skin);
    float spec = v_spec;
    float eye_len = length(v_eye);
    if (eye_len > 0.5) {
        // Angle from the gaze axis (local +z): pupil, iris with a darker limbal ring, sclera.
        float ang = acos(clamp(v_eye.z / eye_len, -1.0, 1.0));
        base = mix(SCLERA, IRIS * 0.35, 1.0 - smoothstep(0.40, 0.43, ang));
        base = mix(base, IRIS, 1.0 - smoothstep(0.36, 0.39, ang));
        base = mix(base, vec3(0.005), 1.0 - smoothstep(0.14, 0.16, ang));
        // Wet eyes: a sharp per-fragment highlight.
        vec3 h = normalize(KEY_DIR + normalize(v_view));
        float key = max(dot(normalize(v_normal), KEY_DIR), 0.0);
        spec = pow(max(dot(normalize(v_normal), h), 0.0), 90.0) * 0.9 * key;
    }
    vec3 color = base * v_diffuse + vec3(spec);
    f_color = vec4(sqrt(clamp(color, 0.0, 1.0)), 1.0);
}
"""

DEPTH_VERTEX_SHADER = """
#version 330
uniform mat4 u_mvp;
in vec3 in_pos;
void main() { gl_Position = u_mvp * vec4(in_pos, 1.0); }
"""

DEPTH_FRAGMENT_SHADER = """
#version 330
out vec4 f_color;
void main() { f_color = vec4(1.0); }
"""
