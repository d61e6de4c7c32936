"""The GL side of `head3d`: context, program, framebuffers, per-head buffers, draw and readback.

Everything here runs on the renderer's one GL thread (see `HeadRenderer._on_gl_thread`), since a
GL context is current on one thread only. moderngl is imported when the context is created, so
this module imports on a machine without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from services.core.backend import BackendError
from services.core.types import AvatarLook
from services.stages.render import animation
from services.stages.render.gltf import HeadAsset, load_head
from services.stages.render.head3d.camera import (
    frame_face,
    gl_matrix,
    model_matrix,
    place_camera,
)
from services.stages.render.head3d.options import HeadRendererOptions
from services.stages.render.head3d.shaders import FRAGMENT_SHADER, VERTEX_SHADER
from services.stages.render.head3d.surface import VERTEX_LAYOUT, vertex_attributes
from services.stages.render.head3d.visibility import bake_visibility
from services.stages.sdk import import_sdk


def require_moderngl() -> ModuleType:
    """moderngl, or `MissingSDKError` (an ImportError) with the install hint."""
    return import_sdk(
        "moderngl", "the head3d renderer needs moderngl; pip install 'avatar-serve[local]'"
    )


def asset_key(path: str | None) -> str:
    """The key of an asset path in `GlScene.heads` (None is the default head)."""
    return path or "<default>"


@dataclass
class GpuHead:
    """GL resources and framing for one asset.

    Attributes:
        asset: The loaded head.
        vao: Vertex array of the head program over `dynamic` and the static attributes.
        dynamic: Buffer of the mixed positions and normals, rewritten every frame.
        buffers: Every buffer to release with the head.
        deltas: (K, V*6) float32 position and normal deltas side by side, one row per shape.
        rest: (V*6,) float32 rest positions and normals, interleaved per vertex.
        shape_index: ARKit name -> row of `deltas`.
        view_proj: The camera's 4x4 projection @ view.
        cam_pos: The camera position.
        pivot: The point the head rotates around.
    """

    asset: HeadAsset
    vao: Any
    dynamic: Any
    buffers: list[Any]
    deltas: np.ndarray
    rest: np.ndarray
    shape_index: dict[str, int]
    view_proj: np.ndarray
    cam_pos: np.ndarray
    pivot: np.ndarray

    def mix(self, blendshapes: dict[str, float]) -> np.ndarray:
        """Rest positions and normals with the ARKit `blendshapes` applied, (V*6,) float32."""
        weights = np.zeros(len(self.shape_index), dtype=np.float32)
        for name, value in blendshapes.items():
            k = self.shape_index.get(name)
            if k is not None:
                weights[k] = value
        # One float32 GEMV over all shapes: cheaper than gathering the active rows (a copy) or
        # letting float64 weights upcast the delta matrix.
        return self.rest + weights @ self.deltas

    def release(self) -> None:
        for obj in (self.vao, *self.buffers):
            obj.release()


class GlScene:
    """An offscreen GL context with the head program, its framebuffers and uploaded heads.

    Call `open` first; `release` frees everything, including what a failed `open` created.
    `heads` is a least-recently-used cache of `max_assets` heads keyed by `asset_key`.

    Args:
        options: The renderer's options (frame size, MSAA, EGL, camera, head motion).
    """

    def __init__(self, options: HeadRendererOptions) -> None:
        self.options = options
        self.ctx: Any = None
        self.prog: Any = None
        self.fbo: Any = None
        self.resolve: Any = None
        self.heads: dict[str, GpuHead] = {}
        self.gl_renderer = ""

    def open(self) -> None:
        """Create the context, compile the program and allocate the framebuffers."""
        moderngl = require_moderngl()
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
        self.ctx = ctx
        self.gl_renderer = str(ctx.info.get("GL_RENDERER", ""))
        self.prog = ctx.program(vertex_shader=VERTEX_SHADER, fragment_shader=FRAGMENT_SHADER)
        size = (opts.width, opts.height)
        samples = min(opts.msaa, ctx.max_samples) if opts.msaa > 1 else 0
        self.fbo = ctx.framebuffer(
            color_attachments=[ctx.renderbuffer(size, 4, samples=samples)],
            depth_attachment=ctx.depth_renderbuffer(size, samples=samples),
        )
        # A multisampled framebuffer cannot be read: frames resolve into a plain one first.
        self.resolve = (
            ctx.framebuffer(color_attachments=[ctx.renderbuffer(size, 4)]) if samples else self.fbo
        )

    def release(self) -> None:
        for head in self.heads.values():
            head.release()
        self.heads.clear()
        if self.resolve is not None and self.resolve is not self.fbo:
            self.resolve.release()
        for obj in (self.fbo, self.prog, self.ctx):
            if obj is not None:
                obj.release()
        self.ctx = self.prog = self.fbo = self.resolve = None

    def head(self, path: str | None) -> GpuHead:
        """GL resources of the asset at `path`, created on first use."""
        key = asset_key(path)
        if key in self.heads:
            self.heads[key] = self.heads.pop(key)  # most recently used last
            return self.heads[key]
        asset = load_head(path)
        while len(self.heads) >= self.options.max_assets:
            self.heads.pop(next(iter(self.heads))).release()
        opts = self.options
        framing = frame_face(asset)
        camera = place_camera(asset, framing, opts.width, opts.height, opts.fov_deg)
        visibility = bake_visibility(self.ctx, asset, framing, camera.position)
        static = vertex_attributes(asset, camera.position, visibility)

        ctx = self.ctx
        dynamic = ctx.buffer(reserve=asset.vertex_count * 6 * 4, dynamic=True)
        static_buf = ctx.buffer(static.tobytes())
        index_buf = ctx.buffer(asset.indices.astype(np.uint32).tobytes())
        vao = ctx.vertex_array(
            self.prog,
            [(dynamic, "3f 3f", "in_pos", "in_normal"), (static_buf, *VERTEX_LAYOUT)],
            index_buffer=index_buf,
            index_element_size=4,
        )
        count = asset.vertex_count
        deltas = np.concatenate([asset.position_deltas, asset.normal_deltas], axis=2)
        head = GpuHead(
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
            view_proj=camera.view_proj,
            cam_pos=camera.position,
            pivot=camera.pivot,
        )
        self.heads[key] = head
        return head

    def draw(self, head: GpuHead, anim: animation.FrameAnimation, look: AvatarLook) -> np.ndarray:
        """Render one frame of `head` posed by `anim` and read it back as (H, W, 3) uint8."""
        head.dynamic.write(head.mix(anim.blendshapes).tobytes())
        scale = self.options.head_motion
        model = model_matrix(
            head.pivot, anim.yaw_deg * scale, anim.pitch_deg * scale, anim.roll_deg * scale
        )
        self.prog["u_view_proj"].write(gl_matrix(head.view_proj))
        self.prog["u_model"].write(gl_matrix(model))
        self.prog["u_skin"].value = tuple(float(c) ** 2 for c in look.skin_rgb)  # gamma 2
        self.prog["u_cam_pos"].value = tuple(float(c) for c in head.cam_pos)

        ctx = self.ctx
        self.fbo.use()
        ctx.enable(ctx.DEPTH_TEST)
        ctx.disable(ctx.CULL_FACE)
        ctx.clear(*(float(c) for c in look.background_rgb), 1.0)
        head.vao.render()
        if self.resolve is not self.fbo:
            ctx.copy_framebuffer(self.resolve, self.fbo)
        data = self.resolve.read(components=3, alignment=1)
        rgb = np.frombuffer(data, dtype=np.uint8).reshape(
            self.options.height, self.options.width, 3
        )
        return rgb[::-1].copy()  # GL rows run bottom-up
