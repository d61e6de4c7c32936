"""A renderer with no GL: small solid frames with latency and failure knobs.

For tests and load tests of the serving layer. Frame timing and blendshape weights come from
the same `animation` functions as the real renderer, so the frame sequence (indexes, pts, mouth
weights) is what `head3d` would give; only the pixels are a flat skin colour with a dark bar
whose height follows `jawOpen`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import numpy as np
from pydantic import Field

from services.core.backend import Capabilities
from services.core.types import AvatarLook, PhonemeTiming, VideoFrame
from services.stages.fake_options import FakeLatencyOptions, FaultInjector
from services.stages.render import animation
from services.stages.render.base import RenderBackend


class FakeRendererOptions(FakeLatencyOptions):
    """Options of the `fake` renderer (failure and latency knobs come from `FakeLatencyOptions`;
    `latency_s` is paid once per render call, before its first frame)."""

    width: int = Field(64, ge=8, le=2048, description="Frame width in pixels.")
    height: int = Field(64, ge=8, le=2048, description="Frame height in pixels.")
    fps: float = Field(25.0, ge=1.0, le=120.0, description="Output frames per second.")
    per_frame_s: float = Field(0.0, ge=0.0, le=10.0, description="Sleep before every frame.")
    # Narrower than `FakeOptions.seed`: it also seeds blink timing, as `head3d`'s seed does.
    seed: int = Field(
        0, ge=0, le=2**31 - 1, description="Seed of the failure draws and of blink timing."
    )


class FakeRenderer(RenderBackend):
    """Deterministic stand-in for `head3d`: same frame sequence and weights, trivial pixels."""

    name = "fake"
    Options = FakeRendererOptions
    capabilities = Capabilities(streaming=True)

    def __init__(self, options: FakeRendererOptions | None = None) -> None:
        super().__init__(options)
        self.options: FakeRendererOptions
        self._faults = FaultInjector(
            self.options,
            f"fake renderer: injected failure (failure_rate={self.options.failure_rate})",
        )

    @property
    def fps(self) -> float:
        return float(self.options.fps)

    def _frames(
        self,
        start_s: float,
        end_s: float,
        phonemes: Sequence[PhonemeTiming],
        look: AvatarLook | None,
    ) -> Iterator[VideoFrame]:
        opts = self.options
        self._faults.call(opts.latency_s)
        look = look or AvatarLook()
        indices = animation.frame_indices(start_s, end_s, self.fps)
        times = np.array(indices, dtype=np.float64) / self.fps
        frames = animation.animate(
            times, phonemes=phonemes, phoneme_offset_s=start_s, seed=opts.seed
        )
        skin = np.array([round(255 * c) for c in look.skin_rgb], dtype=np.uint8)
        for index, pts, anim in zip(indices, times, frames, strict=True):
            if opts.per_frame_s:
                time.sleep(opts.per_frame_s)
            rgb = np.empty((opts.height, opts.width, 3), dtype=np.uint8)
            rgb[:] = skin
            mouth = round(anim.blendshapes["jawOpen"] * opts.height / 2)
            if mouth:
                top = opts.height * 2 // 3 - mouth // 2
                rgb[top : top + mouth, opts.width // 4 : opts.width * 3 // 4] = (40, 10, 10)
            yield VideoFrame(index=index, pts_s=float(pts), rgb=rgb, blendshapes=anim.blendshapes)
