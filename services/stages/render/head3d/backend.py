"""The `head3d` render backend: lifecycle, the GL thread, and frames from the turn timeline.

Per frame, the animation (`animation.py`) gives ARKit weights and a head rotation, and the GL
scene (`gl.py`) mixes, draws and reads frames back. Every GL call runs on one thread that owns
the context (`batcher.py`); frames of concurrent render streams are drawn there in batches, and
each stream keeps `lookahead` frames queued so the GL thread never waits for a slow consumer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from services.core.backend import BackendError, Capabilities
from services.core.types import AvatarLook, PhonemeTiming, VideoFrame
from services.stages.render import animation
from services.stages.render.base import RenderBackend
from services.stages.render.gltf import load_head
from services.stages.render.head3d.batcher import FrameBatcher
from services.stages.render.head3d.gl import FrameJob, GlScene, asset_key, require_moderngl
from services.stages.render.head3d.options import HeadRendererOptions


class HeadRenderer(RenderBackend):
    """Lip-synced 3D head rendered offscreen with moderngl.

    Any glTF head with ARKit-named morph targets works; looks (skin, background, asset) are
    per request, GL resources per asset are built on first use and kept. A renderer can be
    driven from any thread and by several streams at once: their frames are queued to the GL
    thread, which renders up to `max_batch` of them per batch (one framebuffer, one readback)
    and gives each stream exactly its own frames.
    """

    name = "head3d"
    Options = HeadRendererOptions
    capabilities = Capabilities(streaming=True, batching=True)

    def __init__(self, options: HeadRendererOptions | None = None) -> None:
        super().__init__(options)
        self.options: HeadRendererOptions
        self._batcher: FrameBatcher[FrameJob, np.ndarray] | None = None
        self._scene: GlScene | None = None

    @property
    def fps(self) -> float:
        return float(self.options.fps)

    def _gl(self) -> FrameBatcher[FrameJob, np.ndarray]:
        batcher = self._batcher
        if batcher is None:
            raise BackendError("head3d renderer is closed")
        return batcher

    def _load(self) -> None:
        require_moderngl()  # fail here with the install hint, not on the GL thread
        # Fail on a bad default asset before creating any GL state.
        load_head(self.options.asset_path)
        scene = GlScene(self.options)
        batcher = FrameBatcher(
            scene.draw_batch,
            max_batch=self.options.max_batch,
            wait_s=self.options.batch_wait_ms / 1000,
            name="head3d-gl",
        )
        try:
            batcher.call(self._open_scene, scene)
        except BaseException:
            batcher.call(scene.release)
            batcher.close()
            raise
        batcher.max_batch = scene.max_batch  # what the driver's framebuffer size allows
        self._scene, self._batcher = scene, batcher

    def _open_scene(self, scene: GlScene) -> None:
        scene.open()
        scene.head(self.options.asset_path)

    def close(self) -> None:
        with self._lock:
            if self._batcher is not None:
                self._batcher.call(self._scene.release)
                self._batcher.close()
                self._batcher = None
                self._scene = None
            super().close()

    def health(self) -> dict[str, Any]:
        info = super().health()
        with self._lock:
            scene, batcher = self._scene, self._batcher
            if scene is not None and batcher is not None and scene.ctx is not None:
                info["gl_renderer"] = scene.gl_renderer
                info["antialias"] = self.options.antialias
                info["max_batch"] = scene.max_batch
                info.update(batcher.stats())
                head = scene.heads.get(asset_key(self.options.asset_path))
                if head is not None:
                    info["asset"] = head.asset.path
                    info["vertices"] = head.asset.vertex_count
                    info["missing_blendshapes"] = list(head.asset.missing_blendshapes)
        return info

    def batch_stats(self) -> dict[str, Any]:
        """Batches rendered since load: `batches`, `batched_frames`, `largest_batch`, and
        `batch_sizes` (size -> count)."""
        return self._gl().stats()

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
        gl = self._gl()
        gl.call(self._scene.head, asset_path)  # a bad asset fails before any frame
        times = np.array(indices, dtype=np.float64) / self.fps
        frames = animation.animate(
            times,
            phonemes=phonemes,
            phoneme_offset_s=start_s,
            seed=self.options.seed,
            mouth_gain=self.options.mouth_gain,
        )
        pending: deque = deque()
        try:
            for index, pts, anim in zip(indices, times, frames, strict=True):
                pending.append((index, pts, anim, gl.submit(FrameJob(asset_path, anim, look))))
                if len(pending) >= self.options.lookahead:
                    yield self._frame(*pending.popleft())
            while pending:
                yield self._frame(*pending.popleft())
        finally:
            # A consumer that stops early leaves no frames to render for nobody.
            for *_, future in pending:
                future.cancel()

    @staticmethod
    def _frame(index: int, pts: float, anim: animation.FrameAnimation, future) -> VideoFrame:
        return VideoFrame(
            index=index, pts_s=float(pts), rgb=future.result(), blendshapes=anim.blendshapes
        )
