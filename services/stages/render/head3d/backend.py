"""The `head3d` render backend: lifecycle, the GL thread, and frames from the turn timeline.

Per frame, the animation (`animation.py`) gives ARKit weights and a head rotation, and the GL
scene (`gl.py`) mixes, draws and reads the frame back. This module decides what runs where:
every GL call on one thread that owns the context, one frame at a time under the backend lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from services.core.backend import BackendError, Capabilities
from services.core.types import AvatarLook, PhonemeTiming, VideoFrame
from services.stages.render import animation
from services.stages.render.base import RenderBackend
from services.stages.render.gltf import load_head
from services.stages.render.head3d.gl import GlScene, GpuHead, asset_key, require_moderngl
from services.stages.render.head3d.options import HeadRendererOptions

_T = TypeVar("_T")


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
        self._scene: GlScene | None = None

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
        require_moderngl()  # fail here with the install hint, not on the GL thread
        # Fail on a bad default asset before creating any GL state.
        load_head(self.options.asset_path)
        self._gl_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="head3d-gl")
        self._scene = GlScene(self.options)
        try:
            self._on_gl_thread(self._open_scene)
        except BaseException:
            self._on_gl_thread(self._scene.release)
            self._gl_thread.shutdown(wait=True)
            self._gl_thread = None
            self._scene = None
            raise

    def _open_scene(self) -> None:
        self._scene.open()
        self._scene.head(self.options.asset_path)

    def close(self) -> None:
        with self._lock:
            if self._gl_thread is not None:
                self._on_gl_thread(self._scene.release)
                self._gl_thread.shutdown(wait=True)
                self._gl_thread = None
                self._scene = None
            super().close()

    def health(self) -> dict[str, Any]:
        info = super().health()
        with self._lock:
            scene = self._scene
            if scene is not None and scene.ctx is not None:
                info["gl_renderer"] = scene.gl_renderer
                head = scene.heads.get(asset_key(self.options.asset_path))
                if head is not None:
                    info["asset"] = head.asset.path
                    info["vertices"] = head.asset.vertex_count
                    info["missing_blendshapes"] = list(head.asset.missing_blendshapes)
        return info

    def _frames(
        self,
        start_s: float,
        end_s: float,
        phonemes: Sequence[PhonemeTiming],
        look: AvatarLook | None,
    ) -> Iterator[VideoFrame]:
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

    # Both run on the GL thread, under the backend lock (so the scene cannot close meanwhile).

    def _gpu_head(self, path: str | None) -> GpuHead:
        return self._scene.head(path)

    def _draw(
        self, asset_path: str | None, anim: animation.FrameAnimation, look: AvatarLook
    ) -> np.ndarray:
        return self._scene.draw(self._scene.head(asset_path), anim, look)
