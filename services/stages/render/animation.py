"""Facial animation as pure functions of time: phonemes -> ARKit mouth curves, blinks, head sway.

Nothing here touches GL, so the fake renderer and the tests use it as is. Every function is a
deterministic function of its inputs: blinks and head motion depend only on absolute time on
the turn timeline and a seed, so any replica renders any chunk and consecutive chunks join up.

Lip-sync follows the usual viseme pipeline. Each IPA phoneme (as Piper / espeak-ng emit it:
single code points or clusters, stress and length marks, `_` and spaces for pauses) maps to one
of 15 visemes (the Oculus/Meta set), each viseme to a handful of ARKit weights (the table is
adapted from openfacefx's `arkit` retarget preset, MIT). Coarticulation is a dominance blend
(Cohen & Massaro style): every phoneme has a trapezoid activation that rises `ATTACK_S` before
it starts and decays `RELEASE_S` after it ends, scaled by a dominance (lip closures and vowels
dominate, alveolars and velars borrow the shape of their neighbours); the mouth is the
activation-weighted mean of the viseme shapes, where pauses count as a closed, neutral mouth.
Bilabials (p, b, m) additionally force the lips shut, as nothing else would guarantee it.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.core.types import PhonemeTiming

ATTACK_S = 0.06  # anticipatory rise: lips start moving towards a sound before it is heard
RELEASE_S = 0.08  # carry-over decay after the sound ends
BLINK_BIN_S = 4.0  # one blink per bin, placed 1..3 s into it -> intervals of 2..6 s
BLINK_CLOSE_S, BLINK_HOLD_S, BLINK_OPEN_S = 0.05, 0.03, 0.07  # ~150 ms, fast close, slow open
DOUBLE_BLINK_P, DOUBLE_BLINK_GAP_S = 0.15, 0.35

# Viseme -> ARKit weights at full activation.
VISEME_SHAPES: dict[str, dict[str, float]] = {
    "sil": {},
    # Bilabial: lips pressed and slightly rolled in, no teeth.
    "PP": {
        "mouthPressLeft": 0.5,
        "mouthPressRight": 0.5,
        "mouthRollLower": 0.2,
        "mouthRollUpper": 0.2,
    },
    # Labiodental: lower lip up against the upper teeth.
    "FF": {
        "mouthShrugLower": 0.5,
        "mouthRollLower": 0.35,
        "mouthUpperUpLeft": 0.3,
        "mouthUpperUpRight": 0.3,
        "jawOpen": 0.06,
    },
    # Dental: tongue tip at the teeth, close bite.
    "TH": {
        "jawOpen": 0.14,
        "tongueOut": 0.35,
        "mouthUpperUpLeft": 0.15,
        "mouthUpperUpRight": 0.15,
        "mouthLowerDownLeft": 0.15,
        "mouthLowerDownRight": 0.15,
    },
    # Alveolar t d l: slightly open, neutral lips.
    "DD": {"jawOpen": 0.22, "mouthUpperUpLeft": 0.1, "mouthUpperUpRight": 0.1},
    # Velar/glottal k g h: moderate neutral opening.
    "kk": {"jawOpen": 0.3, "mouthLowerDownLeft": 0.12, "mouthLowerDownRight": 0.12},
    # Postalveolar sh ch j zh: lips protruded and rounded.
    "CH": {"mouthFunnel": 0.6, "mouthPucker": 0.35, "jawOpen": 0.15},
    # Sibilant s z: teeth close and bared, corners spread.
    "SS": {
        "jawOpen": 0.08,
        "mouthStretchLeft": 0.3,
        "mouthStretchRight": 0.3,
        "mouthUpperUpLeft": 0.25,
        "mouthUpperUpRight": 0.25,
        "mouthLowerDownLeft": 0.25,
        "mouthLowerDownRight": 0.25,
    },
    # Nasal n ng: slightly open, neutral.
    "nn": {"jawOpen": 0.18, "mouthLowerDownLeft": 0.1, "mouthLowerDownRight": 0.1},
    # Rhotic r and r-coloured vowels: slight rounding.
    "RR": {"mouthPucker": 0.45, "mouthFunnel": 0.3, "jawOpen": 0.18},
    # Open vowels a ɑ æ ʌ ə: the jaw drops.
    "aa": {"jawOpen": 0.62, "mouthLowerDownLeft": 0.12, "mouthLowerDownRight": 0.12},
    # Mid-front vowels e ɛ ɪ: open with spread corners.
    "E": {
        "jawOpen": 0.42,
        "mouthStretchLeft": 0.3,
        "mouthStretchRight": 0.3,
        "mouthSmileLeft": 0.1,
        "mouthSmileRight": 0.1,
    },
    # Close-front i (and the glide j): spread, teeth showing, narrow opening.
    "I": {
        "jawOpen": 0.2,
        "mouthStretchLeft": 0.45,
        "mouthStretchRight": 0.45,
        "mouthSmileLeft": 0.3,
        "mouthSmileRight": 0.3,
        "mouthUpperUpLeft": 0.15,
        "mouthUpperUpRight": 0.15,
    },
    # Rounded open o ɔ: "oh".
    "O": {"jawOpen": 0.45, "mouthFunnel": 0.65, "mouthPucker": 0.35},
    # Close rounded u ʊ (and the glide w): "oo".
    "U": {"jawOpen": 0.15, "mouthPucker": 0.8, "mouthFunnel": 0.45},
}

# Dominance of each viseme in the blend: how firmly it holds its shape against neighbours.
_DOMINANCE = {
    "sil": 0.8,
    "PP": 1.6,
    "FF": 1.4,
    "TH": 0.8,
    "DD": 0.5,
    "kk": 0.4,
    "CH": 1.0,
    "SS": 0.8,
    "nn": 0.5,
    "RR": 0.8,
    "aa": 1.0,
    "E": 1.0,
    "I": 1.0,
    "O": 1.1,
    "U": 1.2,
}

_CONSONANTS = {
    **dict.fromkeys(["p", "b", "m"], "PP"),
    **dict.fromkeys(["f", "v", "ʋ", "ɱ"], "FF"),
    **dict.fromkeys(["θ", "ð"], "TH"),
    **dict.fromkeys(["t", "d", "l", "ɫ", "ɾ", "ʈ", "ɖ", "ɭ", "ʎ", "ɬ"], "DD"),
    **dict.fromkeys(["n", "ɲ", "ŋ", "ɳ"], "nn"),
    **dict.fromkeys(["k", "ɡ", "g", "c", "ɟ", "q", "x", "ɣ", "χ", "h", "ɦ", "ʔ"], "kk"),
    **dict.fromkeys(["ʃ", "ʒ", "tʃ", "dʒ", "ʧ", "ʤ", "ɕ", "ʑ", "ç", "ʝ"], "CH"),
    **dict.fromkeys(["s", "z", "ts", "dz", "ʦ", "ʣ"], "SS"),
    **dict.fromkeys(["r", "ɹ", "ɻ", "ʀ", "ʁ", "ɽ"], "RR"),
    **dict.fromkeys(["j"], "I"),
    **dict.fromkeys(["w", "ʍ", "ɥ"], "U"),
}
_VOWELS = {
    **dict.fromkeys(["a", "ɑ", "æ", "ʌ", "ɐ", "ə", "ɶ", "aɪ", "aj"], "aa"),
    **dict.fromkeys(["ɛ", "e", "ɪ", "ø", "œ", "ɘ", "ᵻ", "eɪ", "ej", "ɪə", "eə", "ɛə"], "E"),
    **dict.fromkeys(["i", "ɨ"], "I"),
    **dict.fromkeys(["ɔ", "o", "ɒ", "ɤ", "ɵ", "aʊ", "aw", "oʊ", "ow", "əʊ", "ɔɪ", "ɔj"], "O"),
    **dict.fromkeys(["u", "ʊ", "y", "ʉ", "ɯ", "ʊə"], "U"),
    **dict.fromkeys(["ɜ", "ɝ", "ɚ"], "RR"),
}
# Lax, unstressed vowels are articulated with less effort.
_REDUCED = {"ə": 0.7, "ɐ": 0.8, "ᵻ": 0.75, "ɪ": 0.85, "ɚ": 0.8}
_PAUSES = {"", "_", " ", "sil", "sp", "spn", "^", "$", "#"}
_STRESS = {"ˈ": 1.15, "ˌ": 1.07, "'": 1.15}
_LENGTH = {"ː", "ˑ", ":"}
_STRIP = set(_STRESS) | _LENGTH | {"ʰ", "ʲ", "ʷ", "̃", "͡", "‿"}

MOUTH_SHAPES: tuple[str, ...] = tuple(
    sorted({name for shape in VISEME_SHAPES.values() for name in shape} | {"mouthClose"})
)
BLINK_SHAPES: tuple[str, ...] = ("eyeBlinkLeft", "eyeBlinkRight")
ANIMATED_SHAPES: tuple[str, ...] = MOUTH_SHAPES + BLINK_SHAPES
# Shapes that open the mouth and so must yield to a bilabial closure.
_OPENING = ("jawOpen", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthFunnel", "tongueOut")
_SHAPE_MATRIX = np.array(
    [[VISEME_SHAPES[v].get(name, 0.0) for name in MOUTH_SHAPES] for v in VISEME_SHAPES],
    dtype=np.float64,
)
_VISEME_ROW = {v: i for i, v in enumerate(VISEME_SHAPES)}


def normalize_phoneme(phoneme: str) -> str:
    """Strip stress, length, aspiration and combining marks: `ˈaɪ` -> `aɪ`, `t͡ʃ` -> `tʃ`."""
    return "".join(
        ch for ch in phoneme.strip() if ch not in _STRIP and not unicodedata.combining(ch)
    )


def viseme_for(phoneme: str) -> str:
    """The viseme of one IPA phoneme; pauses and punctuation give "sil"."""
    base = normalize_phoneme(phoneme)
    if base in _PAUSES or all(unicodedata.category(ch)[0] in "PZS" for ch in base):
        return "sil"
    if base in _VOWELS:
        return _VOWELS[base]
    if base in _CONSONANTS:
        return _CONSONANTS[base]
    # An unlisted cluster: its first known symbol decides (e.g. a diphthong spelled otherwise).
    for ch in base:
        if ch in _VOWELS or ch in _CONSONANTS:
            return _VOWELS.get(ch) or _CONSONANTS[ch]
    return "kk"  # an unknown letter is still a sound: a neutral, weakly dominant opening


@dataclass(frozen=True)
class _Segment:
    start_s: float
    end_s: float
    viseme: str
    amplitude: float


def _segments(phonemes: Sequence[PhonemeTiming]) -> list[_Segment]:
    """Phonemes as viseme segments. Bare stress marks (Piper emits them as their own tokens)
    hand their time and emphasis to the next sound; bare length marks extend the previous one."""
    out: list[_Segment] = []
    pending_start: float | None = None
    pending_gain = 1.0
    for ph in sorted(phonemes, key=lambda p: p.start_s):
        raw = ph.phoneme.strip()
        gain = max((g for mark, g in _STRESS.items() if mark in raw), default=1.0)
        base = normalize_phoneme(raw)
        if not base and raw and all(ch in _STRIP for ch in raw):
            if any(ch in _LENGTH for ch in raw) and out:
                prev = out[-1]
                out[-1] = _Segment(
                    prev.start_s, max(prev.end_s, ph.end_s), prev.viseme, prev.amplitude
                )
            else:
                pending_start = ph.start_s if pending_start is None else pending_start
                pending_gain = max(pending_gain, gain)
            continue
        viseme = viseme_for(raw)
        start = ph.start_s if pending_start is None else min(pending_start, ph.start_s)
        amplitude = 1.0
        if viseme != "sil":
            amplitude = _REDUCED.get(base, 1.0) * max(gain, pending_gain)
        out.append(_Segment(start, max(ph.end_s, start), viseme, amplitude))
        pending_start, pending_gain = None, 1.0
    return out


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def mouth_curves(
    phonemes: Sequence[PhonemeTiming], times_s: np.ndarray, *, gain: float = 1.0
) -> np.ndarray:
    """ARKit mouth weights at `times_s` (same clock as the phoneme spans).

    Returns:
        (len(times_s), len(MOUTH_SHAPES)) float array in [0, 1], columns in `MOUTH_SHAPES` order.
        Times with no phoneme near them (or only pauses) give all zeros: a closed mouth.
    """
    times = np.asarray(times_s, dtype=np.float64).reshape(-1)
    segs = [s for s in _segments(phonemes) if s.end_s > s.start_s or s.viseme != "sil"]
    weights = np.zeros((len(times), len(MOUTH_SHAPES)))
    if not segs or not len(times):
        return weights
    start = np.array([s.start_s for s in segs])
    end = np.array([s.end_s for s in segs])
    rows = np.array([_VISEME_ROW[s.viseme] for s in segs])
    dominance = np.array([_DOMINANCE[s.viseme] for s in segs])
    amplitude = np.array([s.amplitude for s in segs])
    t = times[:, None]
    # Trapezoid per segment: 0 -> 1 over ATTACK_S before its start, 1 -> 0 over RELEASE_S after.
    active = _smoothstep((t - start + ATTACK_S) / ATTACK_S) * _smoothstep(
        (end + RELEASE_S - t) / RELEASE_S
    )
    influence = active * dominance
    shapes = _SHAPE_MATRIX[rows] * amplitude[:, None]
    # max(1, .) rather than the plain sum: an isolated sound still fades in and out smoothly.
    weights = influence @ shapes / np.maximum(influence.sum(axis=1, keepdims=True), 1.0)
    bilabial = rows == _VISEME_ROW["PP"]
    if bilabial.any():
        closure = active[:, bilabial].max(axis=1, keepdims=True)
        opening = [MOUTH_SHAPES.index(n) for n in _OPENING]
        weights[:, opening] *= 1.0 - 0.9 * closure
        # What jaw opening is left is sealed by mouthClose (ARKit: lips together, jaw open).
        jaw = weights[:, MOUTH_SHAPES.index("jawOpen")]
        weights[:, MOUTH_SHAPES.index("mouthClose")] = closure[:, 0] * jaw
    return np.clip(weights * gain, 0.0, 1.0)


def _unit_hash(seed: int, index: np.ndarray, salt: int) -> np.ndarray:
    """Uniform [0, 1) per (seed, index, salt), stateless (splitmix64-style integer hash)."""
    mask = 0xFFFFFFFFFFFFFFFF
    x = (index.astype(np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) & mask
    x ^= np.uint64(((seed * 0x632BE59BD9B4E019) ^ (salt * 0x85EBCA77C2B2AE63)) & mask)
    x ^= x >> np.uint64(30)
    x = (x * np.uint64(0xBF58476D1CE4E5B9)) & mask
    x ^= x >> np.uint64(27)
    x = (x * np.uint64(0x94D049BB133111EB)) & mask
    x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _blink_shape(dt: np.ndarray) -> np.ndarray:
    closing = np.clip(dt / BLINK_CLOSE_S, 0.0, 1.0)
    opening = np.clip((BLINK_CLOSE_S + BLINK_HOLD_S + BLINK_OPEN_S - dt) / BLINK_OPEN_S, 0.0, 1.0)
    return np.where(dt < 0, 0.0, np.minimum(_smoothstep(closing), _smoothstep(opening)))


def blink_curve(times_s: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Eyelid closure in [0, 1] at absolute times: one blink of ~150 ms every 2-6 s, sometimes a
    double blink; depends only on (time, seed)."""
    times = np.asarray(times_s, dtype=np.float64).reshape(-1)
    bins = np.floor(times / BLINK_BIN_S)
    onset = bins * BLINK_BIN_S + 1.0 + 2.0 * _unit_hash(seed, bins, 1)
    closure = _blink_shape(times - onset)
    double = _unit_hash(seed, bins, 2) < DOUBLE_BLINK_P
    second = _blink_shape(times - onset - DOUBLE_BLINK_GAP_S)
    return np.where(double, np.maximum(closure, second), closure)


# Head sway: per axis, three sines of random frequency/phase (seeded). Amplitudes in degrees.
_POSE_AMPLITUDE_DEG = np.array([2.5, 1.6, 1.0])  # yaw, pitch, roll
_POSE_FREQS_HZ = (0.05, 0.33)


def head_pose(times_s: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Slow idle head motion: (len(times_s), 3) yaw, pitch, roll in degrees, a few degrees at
    most, smooth, and a deterministic function of absolute time and seed."""
    times = np.asarray(times_s, dtype=np.float64).reshape(-1, 1)
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0x5EED])
    freqs = rng.uniform(*_POSE_FREQS_HZ, size=(3, 3))
    phases = rng.uniform(0.0, 2 * math.pi, size=(3, 3))
    mix = rng.uniform(0.5, 1.0, size=(3, 3))
    mix /= mix.sum(axis=1, keepdims=True)
    pose = np.empty((times.shape[0], 3))
    for axis in range(3):
        waves = np.sin(2 * math.pi * freqs[axis] * times + phases[axis]) * mix[axis]
        pose[:, axis] = waves.sum(axis=1) * _POSE_AMPLITUDE_DEG[axis]
    return pose


@dataclass(frozen=True)
class FrameAnimation:
    """What one frame shows: blendshape weights and head rotation.

    Attributes:
        blendshapes: ARKit name -> weight in [0, 1].
        yaw_deg: Head rotation about the vertical axis, degrees.
        pitch_deg: Nod, degrees.
        roll_deg: Tilt, degrees.
    """

    blendshapes: dict[str, float]
    yaw_deg: float
    pitch_deg: float
    roll_deg: float


def frame_indices(start_s: float, end_s: float, fps: float) -> range:
    """Indexes of the frames whose `pts = index / fps` lies in `[start_s, end_s)`.

    The same rounding at both ends makes back-to-back spans tile the timeline with no frame
    lost or doubled; the epsilon absorbs float noise in chunk boundaries.
    """
    eps = 1e-6
    first = math.ceil(start_s * fps - eps)
    stop = math.ceil(end_s * fps - eps)
    return range(first, max(first, stop))


def animate(
    times_s: np.ndarray,
    *,
    phonemes: Sequence[PhonemeTiming] = (),
    phoneme_offset_s: float = 0.0,
    seed: int = 0,
    mouth_gain: float = 1.0,
) -> list[FrameAnimation]:
    """Animation for absolute times `times_s`; phoneme spans are relative to `phoneme_offset_s`
    (a speech chunk's `start_s`). Every frame carries the same keys, `ANIMATED_SHAPES`."""
    times = np.asarray(times_s, dtype=np.float64).reshape(-1)
    mouth = mouth_curves(phonemes, times - phoneme_offset_s, gain=mouth_gain)
    blink = blink_curve(times, seed=seed)
    pose = head_pose(times, seed=seed)
    frames = []
    for i in range(len(times)):
        shapes = {name: round(float(w), 4) for name, w in zip(MOUTH_SHAPES, mouth[i], strict=True)}
        shapes["eyeBlinkLeft"] = shapes["eyeBlinkRight"] = round(float(blink[i]), 4)
        frames.append(FrameAnimation(shapes, *(float(v) for v in pose[i])))
    return frames
