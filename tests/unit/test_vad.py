"""Silero VAD + endpointing on synthetic speech: both TTS voices, several levels, added noise.

Clips are made in the test from the espeak backend (milliseconds) and Piper (`slow`: loads a
neural voice): speech padded with silence, scaled to -30..-6 dBFS, optionally mixed with white
or pink noise at 10-20 dB SNR. The true speech span is measured on the clean signal (10 ms
frames within 40 dB of the loudest), the reference for onset and end-of-turn times.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from services.core.audio import resample
from services.core.config import LiveSettings
from services.core.registry import create_backend
from services.live.endpoint import SpeechStarted, SpeechStopped, TurnDetector
from services.live.vad import VAD_RATE, SileroVAD, VADError, pcm16_to_float, silero_model_path

R = VAD_RATE
SETTINGS = LiveSettings()
END_S = SETTINGS.end_silence_ms / 1000.0
QUESTIONS = [
    "What is the nearest train station to the city centre?",
    "Hello, my name is Ada.",
    "Do you like music?",
]
# (speech level dBFS, noise kind, SNR dB)
CONDITIONS = [
    (-30, None, 0),
    (-6, None, 0),
    (-18, "white", 10),
    (-18, "pink", 10),
    (-24, "white", 20),
    (-12, "pink", 15),
]


@pytest.fixture(scope="module")
def vad():
    return SileroVAD()


@pytest.fixture(scope="module")
def espeak():
    return create_backend("tts", "espeak")


def _speech(tts, text: str) -> np.ndarray:
    chunk = tts.synthesize(text)
    return resample(chunk.samples, chunk.sample_rate, R)


def _span(x: np.ndarray) -> tuple[int, int]:
    """First and last+1 sample of 10 ms frames within 40 dB of the loudest frame."""
    frames = x[: x.size // 160 * 160].reshape(-1, 160)
    energy = np.sqrt((frames**2).mean(axis=1))
    voiced = np.flatnonzero(energy > energy.max() * 10 ** (-40 / 20))
    return int(voiced[0]) * 160, (int(voiced[-1]) + 1) * 160


def _noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if kind == "white":
        return white.astype(np.float32)
    spectrum = np.fft.rfft(white)
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0
    pink = np.fft.irfft(spectrum / np.sqrt(f), n)  # 1/f power
    return (pink / pink.std()).astype(np.float32)


def _db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12)


def _clip(speech, level, noise, snr, *, lead=1.0, tail=2.0, seed=0):
    """Speech at `level` dBFS padded with silence, plus noise; returns (clip, start_s, end_s)."""
    a, b = _span(speech)
    x = speech * 10 ** ((level - _db(speech[a:b])) / 20)
    pad = int(lead * R)
    y = np.concatenate([np.zeros(pad), x, np.zeros(int(tail * R))]).astype(np.float32)
    if noise:
        y = y + _noise(noise, y.size, np.random.default_rng(seed)) * 10 ** ((level - snr) / 20)
    return np.clip(y, -1, 1).astype(np.float32), (pad + a) / R, (pad + b) / R


def _run(vad, clip, *, rate=R, avatar_speaking=False, frame_ms=20):
    """Stream `clip` in microphone-sized frames; return all events."""
    det = TurnDetector(vad, SETTINGS, sample_rate=rate)
    det.avatar_speaking = avatar_speaking
    step = int(rate * frame_ms / 1000)
    events = []
    for i in range(0, clip.size, step):
        events += det.feed(clip[i : i + step])
    return events + det.flush()


def _assert_one_turn(events, start_s, end_s, *, noisy):
    started = [e for e in events if isinstance(e, SpeechStarted)]
    stopped = [e for e in events if isinstance(e, SpeechStopped)]
    assert len(started) == 1 and len(stopped) == 1, events
    assert abs(started[0].t_s - start_s) <= 0.1
    assert stopped[0].reason == "silence"
    # Silero's probability decays for a few windows after speech, longer under noise.
    late = 0.3 if noisy else 0.15
    assert END_S - 0.1 <= stopped[0].detected_s - end_s <= END_S + late
    audio = stopped[0].audio
    assert audio.start_s <= start_s and audio.start_s + audio.duration_s >= end_s - 0.1


# --- the model ----------------------------------------------------------------------------------


def test_model_ships_in_the_wheel_and_loads_without_torch():
    path = silero_model_path()
    assert path.is_file() and path.suffix == ".onnx"
    code = (
        "import sys; from services.live.vad import SileroVAD; v = SileroVAD(); "
        "import numpy as np; v.probabilities(np.zeros(16000, np.float32)); "
        "assert 'torch' not in sys.modules and 'silero_vad' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_model_signature_and_window_size(vad):
    names = [i.name for i in vad._session.get_inputs()]
    assert names == ["input", "state", "sr"]
    assert vad.probabilities(np.zeros(R, np.float32)).size == R // 512


def test_probabilities_do_not_depend_on_chunk_size(vad, espeak):
    clip, _, _ = _clip(_speech(espeak, QUESTIONS[0]), -12, None, 0)
    whole = vad.probabilities(clip)
    stream = vad.stream()
    parts = [stream.feed(clip[i : i + 333]).probs for i in range(0, clip.size, 333)]
    np.testing.assert_allclose(np.concatenate(parts), whole[: sum(p.size for p in parts)])
    assert whole.max() > 0.9 and whole[:20].max() < 0.2


@pytest.mark.parametrize("rate", [8000, 24000, 48000])
def test_other_input_rates_are_resampled(vad, espeak, rate):
    clip, start, end = _clip(_speech(espeak, QUESTIONS[0]), -12, None, 0)
    _assert_one_turn(_run(vad, resample(clip, R, rate), rate=rate), start, end, noisy=False)


def test_bad_input_is_a_clear_error(vad):
    with pytest.raises(VADError, match="sample_rate 11025"):
        vad.stream(11025)
    with pytest.raises(VADError, match="even number of bytes"):
        pcm16_to_float(b"\x00\x01\x02")
    assert pcm16_to_float(b"\x00\x80\xff\x7f").tolist() == [-1.0, 32767 / 32768]


# --- turns in spoken clips ----------------------------------------------------------------------


@pytest.mark.parametrize("condition", CONDITIONS, ids=lambda c: f"{c[0]}dB-{c[1]}-{c[2]}")
@pytest.mark.parametrize("text", QUESTIONS)
def test_espeak_speech_is_one_turn(vad, espeak, text, condition):
    level, noise, snr = condition
    clip, start, end = _clip(_speech(espeak, text), level, noise, snr)
    _assert_one_turn(_run(vad, clip), start, end, noisy=noise is not None)


@pytest.mark.slow
def test_piper_speech_is_one_turn(vad):
    pytest.importorskip("piper")
    # No generator noise: the same clips every run (with it, onsets drifted past the tolerance
    # in about one run in three).
    piper = create_backend("tts", "piper", {"noise_scale": 0.0, "noise_w": 0.0})
    for i, text in enumerate(QUESTIONS):
        speech = _speech(piper, text)
        for level, noise, snr in CONDITIONS:
            clip, start, end = _clip(speech, level, noise, snr, seed=i)
            _assert_one_turn(_run(vad, clip), start, end, noisy=noise is not None)


def test_pcm16_frames_give_the_same_turn(vad, espeak):
    clip, start, end = _clip(_speech(espeak, QUESTIONS[2]), -12, "white", 20)
    det = TurnDetector(vad, SETTINGS)
    data = (np.clip(clip, -1, 1) * 32767).astype("<i2").tobytes()
    events = []
    for i in range(0, len(data), 640):  # 20 ms at 16 kHz
        events += det.feed_pcm16(data[i : i + 640])
    _assert_one_turn(events + det.flush(), start, end, noisy=True)


def test_a_pause_shorter_than_the_hangover_does_not_cut_the_user_off(vad, espeak):
    first = _speech(espeak, "I would like to know")
    second = _speech(espeak, "where the museum is.")
    a1, b1 = _span(first)
    a2, b2 = _span(second)
    gap = np.zeros(int(0.3 * R), np.float32)
    speech = np.concatenate([first[a1:b1], gap, second[a2:b2]])
    clip, start, end = _clip(speech, -18, "pink", 20)
    _assert_one_turn(_run(vad, clip), start, end, noisy=True)


# --- no turn at all -----------------------------------------------------------------------------


def _burst(ms: float, level_db: float, rng) -> np.ndarray:
    """A cough-like burst: band-limited noise with a fast attack and an exponential decay."""
    n = int(ms * R / 1000)
    t = np.arange(n) / R
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / R)
    spectrum[(freqs < 300) | (freqs > 4000)] = 0
    x = np.fft.irfft(spectrum, n) * np.minimum(t / 0.01, 1) * np.exp(-t / 0.05)
    return (x / np.abs(x).max() * 10 ** (level_db / 20)).astype(np.float32)


def _voiced_snippet(speech: np.ndarray, ms: float, at_s: float) -> np.ndarray:
    """`ms` of real speech cut from the middle of an utterance: a grunt, an 'uh'."""
    n = int(ms * R / 1000)
    a = int(at_s * R)
    return (speech[a : a + n] * np.hanning(n) ** 0.3).astype(np.float32)


def _pad(x: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros(R), x, np.zeros(2 * R)]).astype(np.float32)


@pytest.mark.parametrize("kind", ["silence", "white", "pink"])
def test_silence_and_noise_start_no_turn(vad, kind):
    rng = np.random.default_rng(3)
    for level in (-40, -20, -10):
        clip = np.zeros(4 * R, np.float32) if kind == "silence" else _noise(kind, 4 * R, rng)
        clip = clip * 10 ** (level / 20) if kind != "silence" else clip
        assert _run(vad, clip.astype(np.float32)) == []


@pytest.mark.parametrize("avatar_speaking", [False, True])
def test_clicks_coughs_and_grunts_start_no_turn(vad, espeak, avatar_speaking):
    rng = np.random.default_rng(4)
    click = np.zeros(40, np.float32)
    click[:] = 0.9 * np.hanning(40)
    speech = _speech(espeak, QUESTIONS[0])
    for sound in (click, _burst(150, -6, rng), _burst(150, -20, rng)):
        assert _run(vad, _pad(sound), avatar_speaking=avatar_speaking) == []
    for at_s in (0.3, 0.8, 1.3):
        grunt = _voiced_snippet(speech, 150, at_s)
        assert _run(vad, _pad(grunt), avatar_speaking=avatar_speaking) == []


def test_barge_in_rule_is_stricter_but_catches_real_speech(vad, espeak):
    speech = _speech(espeak, QUESTIONS[0])
    grunts = [
        _run(vad, _pad(_voiced_snippet(speech, 200, at)), avatar_speaking=True)
        for at in (0.3, 0.8, 1.3)
    ]
    assert grunts == [[], [], []]  # 200 ms of speech may start a turn, never an interruption
    clip, start, end = _clip(speech, -18, "white", 15)
    events = _run(vad, clip, avatar_speaking=True)
    started = [e for e in events if isinstance(e, SpeechStarted)]
    assert len(started) == 1 and started[0].barge_in
    assert abs(started[0].t_s - start) <= 0.1
    assert started[0].detected_s - start <= 0.5
