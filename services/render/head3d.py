"""A 3D talking head rasterised headlessly with moderngl (EGL; Mesa llvmpipe on a CPU).

Per frame: the animation (see `animation.py`) gives ARKit weights and a head rotation; the
weights mix the asset's morph targets on the CPU (a (K,) x (K, V*6) product, well under a
millisecond for a few thousand vertices), the mixed positions and normals are uploaded, drawn
with a small Lambert + Blinn-Phong shader into a multisampled framebuffer, resolved, and read
back (flipped: GL rows run bottom-up). Textures are not used, so that any rig looks the same
and the look is a request parameter: skin comes from the `AvatarLook`; lips, eyebrows and the
iris are painted from where the ARKit shapes move the surface and where the eyes are; a
visibility bake at load keeps the inside of the mouth dark.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from pydantic import Field, field_validator

from services.backend import BackendError, BackendOptions, Capabilities
from services.render import animation
from services.render.base import RenderBackend
from services.render.gltf import (
    PART_CLOTH,
    PART_EYE,
    PART_HAIR,
    PART_SKIN,
    PART_TEETH,
    PART_TONGUE,
    HeadAsset,
    load_head,
)
from services.types import AvatarLook, PhonemeTiming, VideoFrame

_T = TypeVar("_T")

# Lighting is per vertex (Gouraud) and only colour and the eyes are per fragment: llvmpipe shades
# every MSAA sample, so fragment work is what the frame time scales with, and the head's
# mesh is dense enough for smooth diffuse light. Colours are handled with gamma 2 (square /
# sqrt), close enough to sRGB and cheaper than pow.
_VERTEX_SHADER = """
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

_FRAGMENT_SHADER = """
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

_DEPTH_VERTEX_SHADER = """
#version 330
uniform mat4 u_mvp;
in vec3 in_pos;
void main() { gl_Position = u_mvp * vec4(in_pos, 1.0); }
"""

_DEPTH_FRAGMENT_SHADER = """
#version 330
out vec4 f_color;
void main() { f_color = vec4(1.0); }
"""

_PART_ALBEDO = {
    PART_SKIN: (1.0, 1.0, 1.0),  # unused: skin colour comes from the look
    PART_EYE: (0.9, 0.88, 0.84),
    PART_TEETH: (0.92, 0.89, 0.8),
    PART_TONGUE: (0.72, 0.36, 0.36),
    PART_HAIR: (0.16, 0.11, 0.08),
    PART_CLOTH: (0.25, 0.28, 0.33),
}
_LIP_GROUPS = (
    ("mouthFunnel", "mouthPucker"),
    ("mouthRollLower", "mouthRollUpper"),
    ("mouthUpperUpLeft", "mouthUpperUpRight", "mouthLowerDownLeft", "mouthLowerDownRight"),
)


class HeadRendererOptions(BackendOptions):
    """Options of the `head3d` renderer."""

    width: int = Field(512, ge=64, le=2048, description="Frame width in pixels.")
    height: int = Field(512, ge=64, le=2048, description="Frame height in pixels.")
    fps: float = Field(25.0, ge=25.0, le=60.0, description="Output frames per second.")
    asset_path: str | None = Field(
        None,
        description="Default glTF/GLB head with ARKit-named morph targets; None uses the "
        "facecap.glb shipped in the openfacefx package. An AvatarLook's asset_path overrides it.",
    )
    seed: int = Field(
        0, ge=0, le=2**31 - 1, description="Seed of blink timing and idle head motion."
    )
    egl: bool = Field(
        True,
        description="Create the GL context through EGL (headless; works with Mesa llvmpipe or a "
        "GPU driver). False uses moderngl's default backend, which needs a display.",
    )
    mouth_gain: float = Field(
        1.0, ge=0.0, le=2.0, description="Scale of the lip-sync mouth weights (1 = as mapped)."
    )
    head_motion: float = Field(
        1.0, ge=0.0, le=3.0, description="Scale of the idle head sway (0 keeps the head still)."
    )
    msaa: int = Field(
        4, ge=0, le=8, description="Multisample anti-aliasing samples (0 = off; 4 is smooth)."
    )
    max_assets: int = Field(
        8, ge=1, le=64, description="Heads kept on the GPU at once (least recently used go)."
    )
    fov_deg: float = Field(
        18.0, ge=5.0, le=60.0, description="Vertical field of view of the camera."
    )

    @field_validator("msaa")
    @classmethod
    def _msaa_power_of_two(cls, value: int) -> int:
        if value not in (0, 1, 2, 4, 8):
            raise ValueError("msaa must be 0, 1, 2, 4 or 8 samples")
        return value


@dataclass
class _GpuHead:
    """GL resources and framing for one asset."""

    asset: HeadAsset
    vao: Any
    dynamic: Any
    buffers: list[Any]
    deltas: np.ndarray  # (K, V*6): position and normal deltas side by side
    rest: np.ndarray  # (V*6,)
    shape_index: dict[str, int]
    view_proj: np.ndarray
    cam_pos: np.ndarray
    pivot: np.ndarray


def _perspective(fovy_deg: float, aspect: float, near: float, far: float) -> np.ndarray:
    f = 1.0 / math.tan(math.radians(fovy_deg) / 2)
    return np.array(
        [
            [f / aspect, 0, 0, 0],
            [0, f, 0, 0],
            [0, 0, (far + near) / (near - far), 2 * far * near / (near - far)],
            [0, 0, -1, 0],
        ]
    )


def _look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    side = np.cross(forward, up)
    side = side / np.linalg.norm(side)
    true_up = np.cross(side, forward)
    view = np.eye(4)
    view[0, :3], view[1, :3], view[2, :3] = side, true_up, -forward
    view[:3, 3] = -view[:3, :3] @ eye
    return view


def _rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    y, p, r = (math.radians(v) for v in (yaw_deg, pitch_deg, roll_deg))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


def _gl_matrix(m: np.ndarray) -> bytes:
    return np.ascontiguousarray(m.T, dtype=np.float32).tobytes()  # GL wants column-major


@dataclass(frozen=True)
class _Framing:
    target: np.ndarray  # point the camera looks at
    height: float  # world-space height to fit in the frame
    width: float
    pivot: np.ndarray  # neck point the head rotates around


def _framing(asset: HeadAsset) -> _Framing:
    """Frame the face from the eye positions (so a half-body avatar still gets a close-up of
    the face), or the skin bounds for a head without eyes."""
    lo, hi = asset.bounds(PART_SKIN)
    if len(asset.eye_centers) >= 2:
        eyes = asset.eye_centers
        left, right = eyes[np.argmin(eyes[:, 0])], eyes[np.argmax(eyes[:, 0])]
        ipd = float(np.linalg.norm(right - left))
        mid = (left + right) / 2
        if ipd > 1e-6:
            # Proportions of a human face: eyes a little above the middle of a close-up.
            target = mid + np.array([0.0, -0.5 * ipd, 0.0])
            pivot = mid + np.array([0.0, -1.6 * ipd, -1.0 * ipd])
            return _Framing(target, 3.7 * ipd, 3.2 * ipd, pivot)
    center = (lo + hi) / 2
    size = hi - lo
    return _Framing(center, float(size[1]) * 1.15, float(size[0]) * 1.15, center)


class HeadRenderer(RenderBackend):
    """Lip-synced 3D head rendered offscreen with moderngl.

    Any glTF head with ARKit-named morph targets works; looks (skin, background, asset) are
    per request, GL resources per asset are built on first use and kept. GL calls are
    serialised: they run on one thread that owns the context, one frame at a time under the
    backend lock, so a renderer can be driven from any thread and by several streams at once.
    """

    name = "head3d"
    Options = HeadRendererOptions
    capabilities = Capabilities(streaming=True)

    def __init__(self, options: HeadRendererOptions | None = None) -> None:
        super().__init__(options)
        self.options: HeadRendererOptions
        self._gl_thread: ThreadPoolExecutor | None = None
        self._ctx: Any = None
        self._prog: Any = None
        self._fbo: Any = None
        self._resolve: Any = None
        self._heads: dict[str, _GpuHead] = {}
        self._gl_renderer = ""

    @property
    def fps(self) -> float:
        return float(self.options.fps)

    def _on_gl_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run `fn` on the thread that owns the GL context and wait for it.

        A GL context is current on one thread at a time, and some EGL drivers refuse to make a
        context current on a second thread at all; so every GL call goes through one worker
        thread, whichever thread (Ray replica, asyncio executor) asked for the frame.
        """
        if self._gl_thread is None:
            raise BackendError("head3d renderer is closed")
        return self._gl_thread.submit(fn, *args).result()

    def _load(self) -> None:
        try:
            import moderngl  # noqa: F401  (fail here with the install hint, not on the GL thread)
        except ImportError as exc:
            raise ImportError(
                "the head3d renderer needs moderngl; pip install 'avatar-serve[local]'"
            ) from exc
        # Fail on a bad default asset before creating any GL state.
        load_head(self.options.asset_path)
        self._gl_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="head3d-gl")
        try:
            self._on_gl_thread(self._create_gl)
        except BaseException:
            self._on_gl_thread(self._release_gl)
            self._gl_thread.shutdown(wait=True)
            self._gl_thread = None
            raise

    def _create_gl(self) -> None:
        import moderngl

        opts = self.options
        try:
            if opts.egl:
                ctx = moderngl.create_standalone_context(require=330, backend="egl")
            else:
                ctx = moderngl.create_standalone_context(require=330)
        except Exception as exc:
            raise BackendError(
                f"cannot create an OpenGL 3.3 context ({'EGL' if opts.egl else 'default'} "
                f"backend): {exc}; on a headless machine install Mesa's EGL (libegl1, "
                "libgl1-mesa-dri) and keep egl=true"
            ) from exc
        self._ctx = ctx
        self._gl_renderer = str(ctx.info.get("GL_RENDERER", ""))
        self._prog = ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
        size = (opts.width, opts.height)
        samples = min(opts.msaa, ctx.max_samples) if opts.msaa > 1 else 0
        self._fbo = ctx.framebuffer(
            color_attachments=[ctx.renderbuffer(size, 4, samples=samples)],
            depth_attachment=ctx.depth_renderbuffer(size, samples=samples),
        )
        self._resolve = (
            ctx.framebuffer(color_attachments=[ctx.renderbuffer(size, 4)]) if samples else self._fbo
        )
        self._gpu_head(opts.asset_path)

    def _release_gl(self) -> None:
        for head in self._heads.values():
            for obj in (head.vao, *head.buffers):
                obj.release()
        self._heads.clear()
        if self._resolve is not None and self._resolve is not self._fbo:
            self._resolve.release()
        for obj in (self._fbo, self._prog, self._ctx):
            if obj is not None:
                obj.release()
        self._ctx = self._prog = self._fbo = self._resolve = None

    def close(self) -> None:
        with self._lock:
            if self._gl_thread is not None:
                self._on_gl_thread(self._release_gl)
                self._gl_thread.shutdown(wait=True)
                self._gl_thread = None
            super().close()

    def health(self) -> dict[str, Any]:
        info = super().health()
        with self._lock:
            if self._ctx is not None:
                info["gl_renderer"] = self._gl_renderer
                head = self._heads.get(self._asset_key(self.options.asset_path))
                if head is not None:
                    info["asset"] = head.asset.path
                    info["vertices"] = head.asset.vertex_count
                    info["missing_blendshapes"] = list(head.asset.missing_blendshapes)
        return info

    # -- assets --------------------------------------------------------------------------------

    @staticmethod
    def _asset_key(path: str | None) -> str:
        return path or "<default>"

    def _gpu_head(self, path: str | None) -> _GpuHead:
        """GL resources of the asset at `path`, created on first use (GL thread only)."""
        key = self._asset_key(path)
        if key in self._heads:
            self._heads[key] = self._heads.pop(key)  # most recently used last
            return self._heads[key]
        asset = load_head(path)
        while len(self._heads) >= self.options.max_assets:
            oldest = self._heads.pop(next(iter(self._heads)))
            for obj in (oldest.vao, *oldest.buffers):
                obj.release()
        framing = _framing(asset)
        opts = self.options
        aspect = opts.width / opts.height
        half_fov = math.radians(opts.fov_deg) / 2
        fit_height = max(framing.height, framing.width / aspect)
        distance = fit_height / 2 / math.tan(half_fov)
        cam_pos = framing.target + np.array([0.0, 0.0, distance])
        extent = float(np.linalg.norm(asset.bounds()[1] - asset.bounds()[0]))
        near = max(distance - extent, distance * 0.05)
        view_proj = _perspective(opts.fov_deg, aspect, near, distance + extent) @ _look_at(
            cam_pos, framing.target, np.array([0.0, 1.0, 0.0])
        )

        static = np.zeros((asset.vertex_count, 10), dtype=np.float32)
        for part, rgb in _PART_ALBEDO.items():
            static[asset.parts == part, :3] = rgb
        static[:, 3] = asset.parts == PART_SKIN
        static[:, 4] = _lip_mask(asset)
        static[:, 5] = _brow_mask(asset)
        static[:, 6:9] = _eye_directions(asset, cam_pos)
        static[:, 9] = self._bake_visibility(asset, framing, cam_pos)

        ctx = self._ctx
        dynamic = ctx.buffer(reserve=asset.vertex_count * 6 * 4, dynamic=True)
        static_buf = ctx.buffer(static.tobytes())
        index_buf = ctx.buffer(asset.indices.astype(np.uint32).tobytes())
        vao = ctx.vertex_array(
            self._prog,
            [
                (dynamic, "3f 3f", "in_pos", "in_normal"),
                (
                    static_buf,
                    "3f 1f 1f 1f 3f 1f",
                    "in_albedo",
                    "in_skin",
                    "in_lip",
                    "in_brow",
                    "in_eye",
                    "in_light",
                ),
            ],
            index_buffer=index_buf,
            index_element_size=4,
        )
        count = asset.vertex_count
        deltas = np.concatenate([asset.position_deltas, asset.normal_deltas], axis=2)
        head = _GpuHead(
            asset=asset,
            vao=vao,
            dynamic=dynamic,
            buffers=[dynamic, static_buf, index_buf],
            deltas=np.ascontiguousarray(
                deltas.reshape(len(asset.target_names), count * 6), dtype=np.float32
            ),
            rest=np.concatenate([asset.positions, asset.normals], axis=1)
            .reshape(-1)
            .astype(np.float32),
            shape_index={name: i for i, name in enumerate(asset.target_names)},
            view_proj=view_proj,
            cam_pos=cam_pos,
            pivot=framing.pivot,
        )
        self._heads[key] = head
        return head

    def _bake_visibility(
        self, asset: HeadAsset, framing: _Framing, cam_pos: np.ndarray
    ) -> np.ndarray:
        """Per vertex, the fraction of a few views from around the camera that see it.

        A cheap stand-in for ambient occlusion that matters for one thing: the inside of the
        mouth (hidden behind closed lips) must render dark when the mouth opens, whatever the
        rig. Skin and eyes are judged with the mouth closed; teeth and tongue with it open, so
        the front teeth stay bright and the back ones fall into shadow.
        """
        ctx = self._ctx
        lo, hi = asset.bounds()
        center = framing.target
        # Orthographic views of the framed face (not of a whole body, which would leave the
        # mouth a few texels), deep enough that the whole model lies in front of the eye.
        half = 0.75 * max(framing.height, framing.width)
        reach = float(np.linalg.norm(hi - lo) + np.linalg.norm(center - (lo + hi) / 2))
        forward = (cam_pos - center) / np.linalg.norm(cam_pos - center)
        size = 256
        prog = ctx.program(
            vertex_shader=_DEPTH_VERTEX_SHADER, fragment_shader=_DEPTH_FRAGMENT_SHADER
        )
        depth = ctx.depth_texture((size, size))
        fbo = ctx.framebuffer(
            color_attachments=[ctx.renderbuffer((size, size))], depth_attachment=depth
        )
        index_buf = ctx.buffer(asset.indices.astype(np.uint32).tobytes())
        closed = asset.positions
        opened = asset.positions.copy()
        if "jawOpen" in asset.target_names:
            opened += 0.8 * asset.position_deltas[asset.target_names.index("jawOpen")]
        inner = np.isin(asset.parts, (PART_TEETH, PART_TONGUE))
        seen = np.zeros(asset.vertex_count)
        offsets = [(0, 0), (14, 0), (-14, 0), (0, 12), (0, -12)]
        ortho = np.diag([1 / half, 1 / half, -1 / reach, 1.0])
        ortho[2, 3] = -1.0  # maps distance 0..2*reach in front of the eye onto depth -1..1
        try:
            fbo.use()
            ctx.enable(ctx.DEPTH_TEST)
            ctx.disable(ctx.CULL_FACE)
            for positions, mask in ((closed, ~inner), (opened, inner)):
                if not mask.any():
                    continue
                vbo = ctx.buffer(positions.astype(np.float32).tobytes())
                vao = ctx.vertex_array(
                    prog, [(vbo, "3f", "in_pos")], index_buffer=index_buf, index_element_size=4
                )
                homogeneous = np.concatenate([positions, np.ones((len(positions), 1))], axis=1)
                for yaw, pitch in offsets:
                    direction = _rotation(yaw, pitch, 0.0) @ forward
                    eye = center + direction * reach
                    mvp = ortho @ _look_at(eye, center, np.array([0.0, 1.0, 0.0]))
                    prog["u_mvp"].write(_gl_matrix(mvp))
                    ctx.clear(depth=1.0)
                    vao.render()
                    buf = np.frombuffer(
                        fbo.read(components=1, attachment=-1, dtype="f4"), dtype=np.float32
                    )
                    depth_map = buf.reshape(size, size)
                    # The most lenient of each 3x3 neighbourhood: silhouettes must not
                    # occlude the vertices that make them.
                    padded = np.pad(depth_map, 1, mode="edge")
                    lenient = np.max(
                        [
                            padded[dy : dy + size, dx : dx + size]
                            for dy in range(3)
                            for dx in range(3)
                        ],
                        axis=0,
                    )
                    clip = homogeneous @ mvp.T
                    px = np.clip(((clip[:, 0] + 1) / 2 * size).astype(int), 0, size - 1)
                    py = np.clip(((clip[:, 1] + 1) / 2 * size).astype(int), 0, size - 1)
                    vertex_depth = (clip[:, 2] + 1) / 2
                    outside = np.abs(clip[:, :2]).max(axis=1) > 1  # off the face: leave lit
                    visible = outside | (vertex_depth <= lenient[py, px] + 0.004)
                    seen[mask] += visible[mask]
                vao.release()
                vbo.release()
        finally:
            for obj in (fbo, depth, index_buf, prog):
                obj.release()
        return (seen / len(offsets)).astype(np.float32)

    # -- rendering -----------------------------------------------------------------------------

    def _frames(
        self,
        start_s: float,
        end_s: float,
        phonemes: Sequence[PhonemeTiming],
        look: AvatarLook | None,
    ) -> Iterator[VideoFrame]:
        self.load()
        look = look or AvatarLook()
        asset_path = look.asset_path or self.options.asset_path
        indices = animation.frame_indices(start_s, end_s, self.fps)
        if not len(indices):
            return
        with self._lock:
            self._on_gl_thread(self._gpu_head, asset_path)  # a bad asset fails before any frame
        times = np.array(indices, dtype=np.float64) / self.fps
        frames = animation.animate(
            times,
            phonemes=phonemes,
            phoneme_offset_s=start_s,
            seed=self.options.seed,
            mouth_gain=self.options.mouth_gain,
        )
        for index, pts, anim in zip(indices, times, frames, strict=True):
            # The lock is held per frame, not across the yield, so a slow consumer of one stream
            # never blocks other streams on this replica.
            with self._lock:
                rgb = self._on_gl_thread(self._draw, asset_path, anim, look)
            yield VideoFrame(index=index, pts_s=float(pts), rgb=rgb, blendshapes=anim.blendshapes)

    def _draw(
        self, asset_path: str | None, anim: animation.FrameAnimation, look: AvatarLook
    ) -> np.ndarray:
        head = self._gpu_head(asset_path)
        weights = np.zeros(len(head.shape_index), dtype=np.float32)
        for name, value in anim.blendshapes.items():
            k = head.shape_index.get(name)
            if k is not None:
                weights[k] = value
        # One float32 GEMV over all shapes: cheaper than gathering the active rows (a copy) or
        # letting float64 weights upcast the delta matrix.
        mixed = head.rest + weights @ head.deltas
        head.dynamic.write(mixed.tobytes())

        scale = self.options.head_motion
        rotation = _rotation(anim.yaw_deg * scale, anim.pitch_deg * scale, anim.roll_deg * scale)
        model = np.eye(4)
        model[:3, :3] = rotation
        model[:3, 3] = head.pivot - rotation @ head.pivot
        self._prog["u_view_proj"].write(_gl_matrix(head.view_proj))
        self._prog["u_model"].write(_gl_matrix(model))
        self._prog["u_skin"].value = tuple(float(c) ** 2 for c in look.skin_rgb)  # gamma 2
        self._prog["u_cam_pos"].value = tuple(float(c) for c in head.cam_pos)

        ctx = self._ctx
        self._fbo.use()
        ctx.enable(ctx.DEPTH_TEST)
        ctx.disable(ctx.CULL_FACE)
        ctx.clear(*(float(c) for c in look.background_rgb), 1.0)
        head.vao.render()
        if self._resolve is not self._fbo:
            ctx.copy_framebuffer(self._resolve, self._fbo)
        data = self._resolve.read(components=3, alignment=1)
        rgb = np.frombuffer(data, dtype=np.uint8).reshape(
            self.options.height, self.options.width, 3
        )
        return rgb[::-1].copy()  # GL rows run bottom-up


def _lip_mask(asset: HeadAsset) -> np.ndarray:
    """0..1 per vertex: how much of a lip it is.

    Lips are what moves under all three of rounding (funnel/pucker), rolling and raising /
    lowering the lips; each alone also drags the cheeks or the chin along, their geometric mean
    singles out the lips on ARKit rigs without needing a texture.
    """
    groups = [[n for n in group if n in asset.target_names] for group in _LIP_GROUPS]
    if not all(groups):
        return np.zeros(asset.vertex_count, dtype=np.float32)
    score = np.ones(asset.vertex_count)
    for group in groups:
        rows = [asset.target_names.index(n) for n in group]
        motion = np.linalg.norm(asset.position_deltas[rows], axis=2).sum(axis=0)
        motion[asset.parts != PART_SKIN] = 0.0
        score *= motion / max(float(motion.max()), 1e-12)
    score = np.cbrt(score)
    score /= max(float(score.max()), 1e-12)
    x = np.clip((score - 0.45) / 0.2, 0.0, 1.0)
    return (x * x * (3 - 2 * x)).astype(np.float32)


def _brow_mask(asset: HeadAsset) -> np.ndarray:
    """0..1 per vertex: painted eyebrows (the default head is untextured and browless).

    Per side, the brow line is a parabola through the front-facing skin above the eye that
    browDown moves the most, and the brow a band around it: thick towards the nose, thin
    outwards. Heads without two eyes or browDown shapes get none.
    """
    out = np.zeros(asset.vertex_count, dtype=np.float32)
    eyes = asset.eye_centers
    names = ("browDownLeft", "browDownRight")
    if len(eyes) != 2 or not all(n in asset.target_names for n in names):
        return out
    ipd = float(np.linalg.norm(eyes[0] - eyes[1]))
    skin = asset.parts == PART_SKIN
    for name in names:
        motion = np.linalg.norm(asset.position_deltas[asset.target_names.index(name)], axis=1)
        motion[~skin] = 0.0
        if motion.max() <= 0 or ipd <= 0:
            continue
        # This brow's eye is the one its motion centres on.
        eye = eyes[
            np.argmin(
                [
                    np.average(np.linalg.norm(asset.positions - c, axis=1), weights=motion + 1e-9)
                    for c in eyes
                ]
            )
        ]
        rel = (asset.positions - eye) / ipd
        region = (
            skin
            & (asset.normals[:, 2] > 0.2)
            & (np.abs(rel[:, 0]) < 0.5)
            & (rel[:, 1] > 0.05)
            & (rel[:, 1] < 0.8)
            & (rel[:, 2] > -0.3)
        )
        if region.sum() < 6 or motion[region].max() <= 0:
            continue
        weight = (motion[region] / motion[region].max()) ** 2
        line = np.polyval(np.polyfit(rel[region, 0], rel[region, 1], 2, w=weight), rel[:, 0])
        inner = -np.sign(eye[0]) * rel[:, 0]  # > 0 towards the nose
        thickness = 0.085 * (1 + 0.5 * np.clip(inner / 0.4, -1, 1))
        across = (rel[:, 1] - line) / thickness
        ends = np.clip((0.30 - inner) / 0.06, 0, 1) * np.clip((0.45 + inner) / 0.1, 0, 1)
        band = np.clip(1.6 * np.exp(-(across**4)) * ends, 0, 1) * region
        out = np.maximum(out, band.astype(np.float32))
    return out


def _eye_directions(asset: HeadAsset, cam_pos: np.ndarray) -> np.ndarray:
    """Per vertex, its direction from its eyeball's centre in a frame whose +z looks at the
    camera (zeros off the eyes); the shader paints the iris around +z."""
    out = np.zeros((asset.vertex_count, 3), dtype=np.float32)
    for eye, center in enumerate(asset.eye_centers):
        mask = asset.eye_of_vertex == eye
        forward = cam_pos - center
        forward /= np.linalg.norm(forward)
        side = np.cross(np.array([0.0, 1.0, 0.0]), forward)
        side /= np.linalg.norm(side)
        up = np.cross(forward, side)
        offset = asset.positions[mask] - center
        offset /= np.maximum(np.linalg.norm(offset, axis=1, keepdims=True), 1e-9)
        out[mask] = offset @ np.stack([side, up, forward]).T
    return out
