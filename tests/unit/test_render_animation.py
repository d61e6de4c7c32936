"""Animation curves of the render stage: phonemes -> mouth weights, blinks, head sway, frame
timing. Pure numpy, no GL."""

from __future__ import annotations

import numpy as np
import pytest

from services.core.types import PhonemeTiming
from services.stages.render import animation
from services.stages.render.animation import (
    ANIMATED_SHAPES,
    MOUTH_SHAPES,
    animate,
    blink_curve,
    frame_indices,
    head_pose,
    mouth_curves,
    viseme_for,
)

JAW = MOUTH_SHAPES.index("jawOpen")


def _phonemes(*spans: tuple[str, float, float]) -> tuple[PhonemeTiming, ...]:
    return tuple(PhonemeTiming(p, s, e) for p, s, e in spans)


# "hello ... mama": a pause in the middle, a bilabial between open vowels, silence at the ends.
HELLO_MAMA = _phonemes(
    ("_", 0.0, 0.2),
    ("h", 0.2, 0.26),
    ("ə", 0.26, 0.32),
    ("l", 0.32, 0.38),
    ("ˈ", 0.38, 0.40),
    ("oʊ", 0.40, 0.60),
    ("_", 0.60, 1.00),
    ("m", 1.00, 1.08),
    ("ɑː", 1.08, 1.30),
    ("m", 1.30, 1.40),
    ("ɑ", 1.40, 1.60),
    (" ", 1.60, 2.20),
)


def _jaw_at(phonemes: tuple[PhonemeTiming, ...], t: float) -> float:
    return float(mouth_curves(phonemes, np.array([t]))[0, JAW])


@pytest.mark.parametrize(
    ("phoneme", "viseme"),
    [
        ("ɑ", "aa"),
        ("ˈɑː", "aa"),
        ("oʊ", "O"),
        ("iː", "I"),
        ("u", "U"),
        ("p", "PP"),
        ("m", "PP"),
        ("f", "FF"),
        ("θ", "TH"),
        ("t͡ʃ", "CH"),
        ("s", "SS"),
        ("ɹ", "RR"),
        ("_", "sil"),
        (" ", "sil"),
        ("", "sil"),
        (",", "sil"),
        ("ʘ", "kk"),  # an unknown sound still opens the mouth a little
    ],
)
def test_viseme_for(phoneme: str, viseme: str) -> None:
    assert viseme_for(phoneme) == viseme


def test_vowels_open_the_mouth_and_pauses_close_it() -> None:
    assert _jaw_at(HELLO_MAMA, 0.50) > 0.4  # mid "oʊ"
    assert _jaw_at(HELLO_MAMA, 1.20) > 0.5  # mid "ɑː"
    assert _jaw_at(HELLO_MAMA, 1.50) > 0.5  # mid "ɑ"
    for t in (0.0, 0.1, 0.8, 0.9, 1.9, 2.1, 5.0, -1.0):  # leading, middle, trailing silence
        assert _jaw_at(HELLO_MAMA, t) < 0.02, t


def test_no_phonemes_means_a_closed_mouth() -> None:
    weights = mouth_curves((), np.linspace(0, 2, 50))
    assert weights.shape == (50, len(MOUTH_SHAPES))
    assert not weights.any()
    only_pauses = _phonemes(("_", 0.0, 0.5), (" ", 0.5, 1.0))
    assert not mouth_curves(only_pauses, np.linspace(0, 1, 20)).any()


def test_bilabial_closes_the_lips_between_open_vowels() -> None:
    weights = mouth_curves(HELLO_MAMA, np.array([1.35]))[0]  # mid "m" of "ma|ma"
    assert weights[JAW] < 0.15
    assert weights[MOUTH_SHAPES.index("mouthPressLeft")] > 0.2


def test_rounded_vowels_round_and_spread_vowels_spread() -> None:
    oo = mouth_curves(_phonemes(("u", 0.0, 0.3)), np.array([0.15]))[0]
    ee = mouth_curves(_phonemes(("i", 0.0, 0.3)), np.array([0.15]))[0]
    assert oo[MOUTH_SHAPES.index("mouthPucker")] > 0.5
    assert ee[MOUTH_SHAPES.index("mouthStretchLeft")] > 0.3
    assert ee[MOUTH_SHAPES.index("mouthPucker")] == 0


def test_curves_are_smooth_and_bounded() -> None:
    times = np.arange(-0.5, 2.5, 0.005)
    weights = mouth_curves(HELLO_MAMA, times)
    assert weights.min() >= 0 and weights.max() <= 1
    # Attack/release ramps: nothing jumps by more than a small step in 5 ms.
    assert np.abs(np.diff(weights, axis=0)).max() < 0.12


def test_a_bare_stress_mark_does_not_dip_the_mouth() -> None:
    with_mark = _phonemes(("ɑ", 0.0, 0.2), ("ˈ", 0.2, 0.25), ("ɑ", 0.25, 0.45))
    assert _jaw_at(with_mark, 0.225) > 0.5
    longer = _phonemes(("ɑ", 0.0, 0.2), ("ː", 0.2, 0.3), ("_", 0.3, 1.0))
    shorter = _phonemes(("ɑ", 0.0, 0.2), ("_", 0.2, 1.0))
    assert _jaw_at(longer, 0.23) > 0.55  # the length mark extends the vowel
    assert _jaw_at(shorter, 0.23) < 0.4


def test_gain_scales_the_mouth() -> None:
    t = np.array([1.2])
    full = mouth_curves(HELLO_MAMA, t)[0, JAW]
    assert mouth_curves(HELLO_MAMA, t, gain=0.5)[0, JAW] == pytest.approx(full / 2)
    assert not mouth_curves(HELLO_MAMA, t, gain=0.0).any()


def _blink_onsets(curve: np.ndarray, times: np.ndarray) -> np.ndarray:
    closed = curve > 0.5
    return times[1:][closed[1:] & ~closed[:-1]]


def test_blinks_are_natural_and_deterministic() -> None:
    times = np.arange(0.0, 120.0, 0.005)
    curve = blink_curve(times, seed=7)
    onsets = _blink_onsets(curve, times)
    assert 20 <= len(onsets) <= 60  # one every 2-6 s, plus the odd double blink
    gaps = np.diff(onsets)
    assert gaps.max() < 6.5
    assert gaps.min() > 0.25
    assert curve.max() == pytest.approx(1.0)
    # Each blink is short: under ~150 ms from first movement to open again.
    moving = curve > 0.01
    starts = np.flatnonzero(moving[1:] & ~moving[:-1])
    ends = np.flatnonzero(~moving[1:] & moving[:-1])
    durations = (ends[: len(starts)] - starts[: len(ends)]) * 0.005
    assert durations.max() <= 0.16
    np.testing.assert_array_equal(curve, blink_curve(times, seed=7))
    assert not np.array_equal(curve, blink_curve(times, seed=8))


def test_blinks_depend_on_absolute_time_only() -> None:
    times = np.arange(10.0, 20.0, 0.04)
    whole = blink_curve(times, seed=3)
    parts = np.concatenate([blink_curve(times[:100], seed=3), blink_curve(times[100:], seed=3)])
    np.testing.assert_array_equal(whole, parts)


def test_blinks_at_25_fps_are_visible() -> None:
    times = np.arange(0, 60 * 25) / 25.0
    curve = blink_curve(times, seed=1)
    assert len(_blink_onsets(curve, times)) >= 10


def test_head_pose_is_small_smooth_and_deterministic() -> None:
    times = np.arange(0.0, 60.0, 0.04)
    pose = head_pose(times, seed=5)
    assert pose.shape == (len(times), 3)
    assert np.abs(pose).max() < 4.0
    assert pose[:, 0].std() > 0.3  # it does move
    assert np.abs(np.diff(pose, axis=0)).max() < 0.2  # degrees per frame
    np.testing.assert_array_equal(pose, head_pose(times, seed=5))
    np.testing.assert_array_equal(pose[500:], head_pose(times[500:], seed=5))


@pytest.mark.parametrize("fps", [25.0, 30.0, 60.0])
def test_frame_indices_tile_the_timeline(fps: float) -> None:
    rng = np.random.default_rng(0)
    bounds = np.concatenate([[0.0], np.cumsum(rng.uniform(0.3, 4.0, size=40))])
    indices: list[int] = []
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        span = frame_indices(float(start), float(end), fps)
        for i in span:
            assert start - 1e-9 <= i / fps < end
        indices.extend(span)
    assert indices == list(range(len(indices)))
    assert indices[-1] == int(np.ceil(bounds[-1] * fps - 1e-6)) - 1


def test_frame_indices_edges() -> None:
    assert frame_indices(0.0, 1.0, 25) == range(0, 25)
    assert frame_indices(1.0, 2.0, 25) == range(25, 50)
    assert frame_indices(0.5, 0.5, 25) == range(20, 20)
    assert frame_indices(0.01, 0.02, 25) == range(1, 1)  # no frame inside a short span
    assert frame_indices(1.0, 0.5, 25) == range(25, 25)


def test_animate_frames_carry_all_shapes() -> None:
    times = np.arange(100) / 25.0 + 3.0
    frames = animate(times, phonemes=HELLO_MAMA, phoneme_offset_s=3.0, seed=1)
    assert len(frames) == 100
    assert all(set(f.blendshapes) == set(ANIMATED_SHAPES) for f in frames)
    jaw = np.array([f.blendshapes["jawOpen"] for f in frames])
    # The offset places the phonemes: the vowel of "ma" is 1.2 s into the chunk.
    assert jaw[round(1.2 * 25)] > 0.5
    assert jaw[round(0.8 * 25)] < 0.02
    assert all(abs(f.yaw_deg) < 4 for f in frames)
    assert animation.ANIMATED_SHAPES[-2:] == ("eyeBlinkLeft", "eyeBlinkRight")
