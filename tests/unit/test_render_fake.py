"""The fake renderer: the real frame sequence and weights, trivial pixels, injected faults."""

from __future__ import annotations

import time

import numpy as np
import pytest
from pydantic import ValidationError

from services.core.backend import BackendError
from services.core.registry import create_backend
from services.core.types import AvatarLook, PhonemeTiming, SpeechChunk
from services.stages.render.fake import FakeRenderer, FakeRendererOptions


def _speech(start_s: float, duration_s: float) -> SpeechChunk:
    phonemes = (
        PhonemeTiming("_", 0.0, 0.2),
        PhonemeTiming("ɑ", 0.2, 0.6),
        PhonemeTiming("_", 0.6, duration_s),
    )
    rate = 8000
    return SpeechChunk(
        samples=np.zeros(round(duration_s * rate), dtype=np.float32),
        sample_rate=rate,
        text="ah",
        index=0,
        phonemes=phonemes,
        start_s=start_s,
    )


def test_registered_and_validated() -> None:
    backend = create_backend("render", "fake", {"fps": 30, "width": 16, "height": 16})
    assert isinstance(backend, FakeRenderer) and backend.fps == 30
    with pytest.raises(ValidationError):
        FakeRendererOptions(failure_rate=1.5)
    with pytest.raises(ValidationError):
        FakeRendererOptions(unknown=1)  # type: ignore[call-arg]


def test_frames_tile_the_timeline_and_follow_the_mouth() -> None:
    backend = FakeRenderer(FakeRendererOptions(width=32, height=24))
    first = list(backend.render(_speech(0.0, 1.0)))
    second = list(backend.render(_speech(1.0, 1.0)))
    assert [f.index for f in first + second] == list(range(50))
    frame = first[10]  # 0.4 s: mid vowel
    assert frame.rgb.shape == (24, 32, 3)
    assert frame.blendshapes["jawOpen"] > 0.5
    assert (frame.rgb == [40, 10, 10]).all(axis=2).any()  # the mouth bar is drawn
    assert first[0].blendshapes["jawOpen"] == 0 and first[-1].blendshapes["jawOpen"] == 0
    idle = list(backend.render_idle(2.0, 3.0, look=AvatarLook(skin_rgb=(1.0, 0.0, 0.0))))
    assert [f.index for f in idle] == list(range(50, 75))
    assert all(f.blendshapes["jawOpen"] == 0 for f in idle)
    np.testing.assert_array_equal(idle[0].rgb[0, 0], [255, 0, 0])


def test_same_weights_as_the_real_renderer_would_use() -> None:
    a = list(FakeRenderer(FakeRendererOptions(seed=4)).render_idle(0.0, 20.0))
    b = list(FakeRenderer(FakeRendererOptions(seed=4)).render_idle(0.0, 20.0))
    assert [f.blendshapes for f in a] == [f.blendshapes for f in b]
    assert max(f.blendshapes["eyeBlinkLeft"] for f in a) > 0.6


def test_failure_rate_is_seeded() -> None:
    def outcomes(seed: int) -> list[bool]:
        backend = FakeRenderer(FakeRendererOptions(failure_rate=0.5, seed=seed))
        result = []
        for _ in range(40):
            try:
                list(backend.render_idle(0.0, 0.1))
                result.append(True)
            except BackendError:
                result.append(False)
        return result

    first = outcomes(1)
    assert 5 < first.count(False) < 35
    assert first == outcomes(1)
    always = FakeRenderer(FakeRendererOptions(failure_rate=1.0))
    with pytest.raises(BackendError, match="injected"):
        next(iter(always.render_idle(0.0, 1.0)))


def test_latency_knobs() -> None:
    backend = FakeRenderer(FakeRendererOptions(latency_s=0.05, per_frame_s=0.01))
    started = time.perf_counter()
    frames = list(backend.render_idle(0.0, 0.2))
    assert len(frames) == 5
    assert time.perf_counter() - started >= 0.05 + 5 * 0.01
