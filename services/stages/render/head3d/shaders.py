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

# -- post passes over a batch atlas (see `targets.py`) ---------------------------------------
# Frames of a batch are tiles stacked vertically in one framebuffer; a post pass runs once over
# the used tiles and must never read across a tile's edge (that is another session's frame).

POST_VERTEX_SHADER = """
#version 330
void main() {  // one triangle that covers the viewport, no vertex buffer
    vec2 p = vec2(float((gl_VertexID & 1) << 2) - 1.0, float((gl_VertexID & 2) << 1) - 1.0);
    gl_Position = vec4(p, 0.0, 1.0);
}
"""

# FXAA in its classic compact form (Lottes' FXAA "PC" preset as popularised for WebGL): the
# luma of the four diagonal neighbours gives the edge direction, and an edge pixel is replaced
# by a blend of two or four taps along the edge. It runs as two passes. llvmpipe shades 4x4
# blocks as SIMD vectors and runs both sides of every branch, so a one-pass FXAA pays the
# blend on every pixel (+6 ms a 512x512 frame); but it skips a block that fails an early depth
# test. So two passes: MARK copies the frame and writes depth 0 on edge pixels (4-8% of the
# 4x4 blocks of a face), 1 elsewhere; BLEND (depth test >) runs only on the edge blocks. On a
# 512x512 frame MARK costs ~3 ms and BLEND ~0.4 ms of CPU (three passes that mark by discard
# instead of gl_FragDepth measured no better).
FXAA_FRAGMENT_SHADER = """
#version 330
uniform sampler2D u_image;
uniform vec2 u_size;   // atlas size in pixels
uniform int u_tile_h;  // height of one tile
out vec4 f_color;
const vec3 LUMA = vec3(0.299, 0.587, 0.114);
const float REDUCE_MIN = 1.0 / 128.0;
const float REDUCE_MUL = 1.0 / 8.0;
const float SPAN_MAX = 8.0;
ivec2 lo;
ivec2 hi;
float luma_at(ivec2 q) { return dot(texelFetch(u_image, clamp(q, lo, hi), 0).rgb, LUMA); }
vec3 tap(vec2 px) {
    return textureLod(u_image, clamp(px, vec2(lo) + 0.5, vec2(hi) + 0.5) / u_size, 0.0).rgb;
}
void main() {
    ivec2 q = ivec2(gl_FragCoord.xy);
    lo = ivec2(0, (q.y / u_tile_h) * u_tile_h);  // never read across the tile's edge
    hi = ivec2(int(u_size.x) - 1, lo.y + u_tile_h - 1);
    vec3 rgb_m = texelFetch(u_image, q, 0).rgb;
    float nw = luma_at(q + ivec2(-1, -1));
    float ne = luma_at(q + ivec2(1, -1));
    float sw = luma_at(q + ivec2(-1, 1));
    float se = luma_at(q + ivec2(1, 1));
    float m = dot(rgb_m, LUMA);
    float luma_min = min(m, min(min(nw, ne), min(sw, se)));
    float luma_max = max(m, max(max(nw, ne), max(sw, se)));
#ifdef MARK
    f_color = vec4(rgb_m, 1.0);
    gl_FragDepth = luma_max - luma_min < max(1.0 / 16.0, luma_max / 8.0) ? 1.0 : 0.0;
#else
    vec2 p = gl_FragCoord.xy;
    vec2 dir = vec2(-((nw + ne) - (sw + se)), (nw + sw) - (ne + se));
    float reduce = max((nw + ne + sw + se) * 0.25 * REDUCE_MUL, REDUCE_MIN);
    float rcp_min = 1.0 / (min(abs(dir.x), abs(dir.y)) + reduce);
    dir = clamp(dir * rcp_min, vec2(-SPAN_MAX), vec2(SPAN_MAX));
    vec3 a = 0.5 * (tap(p + dir * (1.0 / 3.0 - 0.5)) + tap(p + dir * (2.0 / 3.0 - 0.5)));
    vec3 b = a * 0.5 + 0.25 * (tap(p - dir * 0.5) + tap(p + dir * 0.5));
    float luma_b = dot(b, LUMA);
    f_color = vec4((luma_b < luma_min || luma_b > luma_max) ? a : b, 1.0);
#endif
}
"""


def with_define(source: str, name: str) -> str:
    """`source` with `#define name` after its `#version` line."""
    head, _, body = source.lstrip().partition("\n")
    return f"{head}\n#define {name}\n{body}"


# Multisample resolve as a pass, so a batch resolves only the tiles it used (a framebuffer blit
# would resolve the whole atlas); the box filter is what a driver's resolve does. The driver may
# allocate more samples than asked (llvmpipe has only 4x): average all that the texture holds.
RESOLVE_FRAGMENT_SHADER = """
#version 330
#extension GL_ARB_shader_texture_image_samples : enable
uniform sampler2DMS u_image;
uniform int u_samples;  // as asked, for drivers that cannot say what they allocated
out vec4 f_color;
void main() {
#ifdef GL_ARB_shader_texture_image_samples
    int samples = textureSamples(u_image);
#else
    int samples = u_samples;
#endif
    ivec2 p = ivec2(gl_FragCoord.xy);
    vec4 sum = vec4(0.0);
    for (int s = 0; s < samples; s++) { sum += texelFetch(u_image, p, s); }
    f_color = sum / float(samples);
}
"""
