"""The GL side of `head3d`: context, program, per-head buffers, and drawing a batch of frames.

Everything here runs on the renderer's one GL thread (see `HeadRenderer._on_gl_thread`), since a
GL context is current on one thread only. moderngl is imported when the context is created, so
this module imports on a machine without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
from services.stages.render.head3d.targets import FrameTargets, max_tiles
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
        static_buf: Per-vertex paint and visibility (`surface.VERTEX_LAYOUT`).
        index_buf: Triangle indices.
        deltas: (K, V*6) float32 position and normal deltas side by side, one row per shape.
        rest: (V*6,) float32 rest positions and normals, interleaved per vertex.
        shape_index: ARKit name -> row of `deltas`.
        view_proj: The camera's 4x4 projection @ view (GL convention: +y up on screen).
        cam_pos: The camera position.
        pivot: The point the head rotates around.
        slots: Per tile of a batch, (mixed-vertex buffer, vertex array): each frame of a batch
            has its own buffer, so no draw waits for the previous one to finish reading.
    """

    asset: HeadAsset
    static_buf: Any
    index_buf: Any
    deltas: np.ndarray
    rest: np.ndarray
    shape_index: dict[str, int]
    view_proj: np.ndarray
    cam_pos: np.ndarray
    pivot: np.ndarray
    slots: list[tuple[Any, Any]] = field(default_factory=list)

    def mix(self, blendshapes: dict[str, float]) -> np.ndarray:
        """Rest positions and normals with the ARKit `blendshapes` applied, (V*6,) float32."""
        out = self.rest.copy()
        row = np.empty_like(out)
        # One axpy per active shape (a frame moves ~5-20 of the 52), ~0.2 ms for 2.7k vertices.
        # Not a GEMV: numpy hands that to a multithreaded BLAS whose spinning threads fight the
        # GL rasteriser's for the same cores (measured 17 ms per frame instead of 0.2 on a
        # loaded 2-core machine).
        for name, value in blendshapes.items():
            k = self.shape_index.get(name)
            if k is not None and value != 0.0:
                np.multiply(self.deltas[k], np.float32(value), out=row)
                out += row
        return out

    def slot(self, ctx: Any, prog: Any, index: int) -> tuple[Any, Any]:
        """The vertex buffer and array of batch tile `index`, created on first use."""
        while len(self.slots) <= index:
            dynamic = ctx.buffer(reserve=self.asset.vertex_count * 6 * 4, dynamic=True)
            vao = ctx.vertex_array(
                prog,
                [(dynamic, "3f 3f", "in_pos", "in_normal"), (self.static_buf, *VERTEX_LAYOUT)],
                index_buffer=self.index_buf,
                index_element_size=4,
            )
            self.slots.append((dynamic, vao))
        return self.slots[index]

    def release(self) -> None:
        for dynamic, vao in self.slots:
            vao.release()
            dynamic.release()
        self.slots.clear()
        self.static_buf.release()
        self.index_buf.release()


# Flips the image vertically, so frames read back top-down with no copy.
_FLIP_Y = np.diag([1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class FrameJob:
    """One frame to draw: which head, posed how, looking how."""

    asset_path: str | None
    anim: animation.FrameAnimation
    look: AvatarLook


class GlScene:
    """An offscreen GL context with the head program, its framebuffers and uploaded heads.

    Call `open` first; `release` frees everything, including what a failed `open` created.
    `heads` is a least-recently-used cache of `max_assets` heads keyed by `asset_key`.

    Args:
        options: The renderer's options (frame size, anti-aliasing, batch, EGL, camera).
    """

    def __init__(self, options: HeadRendererOptions) -> None:
        self.options = options
        self.ctx: Any = None
        self.prog: Any = None
        self.targets: FrameTargets | None = None
        self.heads: dict[str, GpuHead] = {}
        self.gl_renderer = ""
        self.max_batch = 1
        self._uniforms: dict[str, Any] = {}

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
        self._uniforms = {
            name: self.prog[name] for name in ("u_view_proj", "u_model", "u_skin", "u_cam_pos")
        }
        self.max_batch = min(opts.max_batch, max_tiles(ctx, opts.height))
        self.targets = FrameTargets(ctx, opts.width, opts.height, self.max_batch, opts.antialias)

    def release(self) -> None:
        for head in self.heads.values():
            head.release()
        self.heads.clear()
        if self.targets is not None:
            self.targets.release()
        for obj in (self.prog, self.ctx):
            if obj is not None:
                obj.release()
        self.ctx = self.prog = self.targets = None

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
        count = asset.vertex_count
        deltas = np.concatenate([asset.position_deltas, asset.normal_deltas], axis=2)
        head = GpuHead(
            asset=asset,
            static_buf=self.ctx.buffer(static.tobytes()),
            index_buf=self.ctx.buffer(asset.indices.astype(np.uint32).tobytes()),
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

    def draw_batch(self, jobs: list[FrameJob]) -> list[np.ndarray | BaseException]:
        """Draw up to `max_batch` frames as tiles of one framebuffer and read them back at once.

        Returns per job its (H, W, 3) uint8 frame, or the error that kept it from being drawn
        (an asset that fails to load spoils its own frames, not the batch's other sessions').
        """
        if not 0 < len(jobs) <= self.max_batch:
            raise ValueError(f"a batch holds 1..{self.max_batch} frames, got {len(jobs)}")
        targets, ctx, uniforms = self.targets, self.ctx, self._uniforms
        targets.begin()
        ctx.disable(ctx.CULL_FACE)
        scale = self.options.head_motion
        results: list[np.ndarray | BaseException | None] = [None] * len(jobs)
        drawn: GpuHead | None = None
        # Grouped by head, so the camera uniforms change once per asset in the batch.
        for tile, job in sorted(enumerate(jobs), key=lambda item: asset_key(item[1].asset_path)):
            try:
                head = self.head(job.asset_path)
            except Exception as exc:  # noqa: BLE001 - reported on that frame alone
                results[tile] = exc
                continue
            dynamic, vao = head.slot(ctx, self.prog, tile)
            dynamic.write(head.mix(job.anim.blendshapes))
            if head is not drawn:
                uniforms["u_view_proj"].write(gl_matrix(_FLIP_Y @ head.view_proj))
                uniforms["u_cam_pos"].value = tuple(float(c) for c in head.cam_pos)
                drawn = head
            anim = job.anim
            model = model_matrix(
                head.pivot, anim.yaw_deg * scale, anim.pitch_deg * scale, anim.roll_deg * scale
            )
            uniforms["u_model"].write(gl_matrix(model))
            uniforms["u_skin"].value = tuple(float(c) ** 2 for c in job.look.skin_rgb)  # gamma 2
            viewport = targets.tile_viewport(tile)
            targets.scene.viewport = viewport
            background = tuple(float(c) for c in job.look.background_rgb)
            targets.scene.clear(*background, 1.0, depth=1.0, viewport=viewport)
            vao.render()
        pixels = targets.read(len(jobs))
        return [pixels[i] if r is None else r for i, r in enumerate(results)]
