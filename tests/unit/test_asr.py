"""Unit tests for the ASR backends: the fake's knobs and Whisper on Piper-synthesised speech."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from pydantic import ValidationError

from services.core.backend import BackendError
from services.core.registry import backend_names, create_backend
from services.core.types import AudioChunk, Transcript
from services.stages.asr.base import ASRBackend

SENTENCE = "Hello, my name is Ada. I can help you find the nearest train station today."


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def _silence(seconds: float, rate: int = 16000) -> AudioChunk:
    return AudioChunk(np.zeros(int(seconds * rate), dtype=np.float32), rate)


@pytest.mark.parametrize("name", backend_names("asr"))
def test_every_registered_backend_builds(name):
    backend = create_backend("asr", name)
    assert isinstance(backend, ASRBackend)
    assert backend.name == name
    assert not backend.loaded
    assert backend.health()["backend"] == name


# --- fake --------------------------------------------------------------------------------------


def test_fake_returns_text_with_even_word_timings():
    asr = create_backend("asr", "fake", {"text": "one two three four"})
    result = asr.transcribe(_silence(2.0))
    assert isinstance(result, Transcript)
    assert result.text == "one two three four"
    assert [w.word for w in result.words] == ["one", "two", "three", "four"]
    assert [(w.start_s, w.end_s) for w in result.words] == [
        (0.0, 0.5),
        (0.5, 1.0),
        (1.0, 1.5),
        (1.5, 2.0),
    ]
    assert result.audio_duration_s == pytest.approx(2.0)


def test_fake_default_text():
    assert create_backend("asr", "fake").transcribe(_silence(1.0)).text == "Hello, who are you?"


def test_fake_failure_rate_one_always_raises():
    asr = create_backend("asr", "fake", {"failure_rate": 1.0})
    for _ in range(3):
        with pytest.raises(BackendError, match="injected"):
            asr.transcribe(_silence(0.5))


def test_fake_failures_are_seeded():
    def pattern(seed: int) -> list[bool]:
        asr = create_backend("asr", "fake", {"failure_rate": 0.5, "seed": seed})
        outcomes = []
        for _ in range(40):
            try:
                asr.transcribe(_silence(0.1))
                outcomes.append(True)
            except BackendError:
                outcomes.append(False)
        return outcomes

    first = pattern(7)
    assert first == pattern(7)
    assert 5 < sum(first) < 35


def test_fake_latency_and_rtf_add_time():
    audio = _silence(1.0)
    fast = create_backend("asr", "fake")
    slow = create_backend("asr", "fake", {"latency_s": 0.1, "rtf": 0.1})
    t0 = time.perf_counter()
    fast.transcribe(audio)
    t1 = time.perf_counter()
    slow.transcribe(audio)
    t2 = time.perf_counter()
    assert t2 - t1 >= 0.19  # 0.1 s fixed + 0.1 x 1 s of audio
    assert t2 - t1 > t1 - t0


def test_fake_rejects_unknown_option():
    with pytest.raises(ValidationError):
        create_backend("asr", "fake", {"no_such_knob": 1})


# --- whisper (checks that need no model) ---------------------------------------------------------


def test_whisper_rejects_long_audio_with_reason():
    asr = create_backend("asr", "whisper", {"max_audio_s": 2.0})
    with pytest.raises(BackendError, match="max_audio_s"):
        asr.transcribe(_silence(3.0))
    assert not asr.loaded  # rejected before paying for the model


def test_whisper_bad_model_path_is_backend_error(tmp_path):
    asr = create_backend("asr", "whisper", {"model_path": str(tmp_path)})
    with pytest.raises(BackendError, match="model.bin"):
        asr.load()


# --- whisper (real model) ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def whisper():
    asr = create_backend("asr", "whisper")
    asr.load()
    yield asr
    asr.close()


@pytest.fixture(scope="module")
def piper_clip() -> AudioChunk:
    pytest.importorskip("piper")
    # No generator noise: the same audio every run, so Whisper's exact words are reproducible
    # (Piper's default noise made about one run in twenty mishear a word).
    tts = create_backend("tts", "piper", {"noise_scale": 0.0, "noise_w": 0.0})
    speech = tts.synthesize(SENTENCE)
    tts.close()
    return AudioChunk(speech.samples, speech.sample_rate)


@pytest.mark.slow
def test_whisper_transcribes_piper_speech(whisper, piper_clip):
    result = whisper.transcribe(piper_clip)
    assert _words(result.text) == _words(SENTENCE)
    assert result.language == "en"
    assert result.audio_duration_s == pytest.approx(piper_clip.duration_s)


@pytest.mark.slow
def test_whisper_word_timings_ordered_and_inside_audio(whisper, piper_clip):
    result = whisper.transcribe(piper_clip)
    assert _words(" ".join(w.word for w in result.words)) == _words(SENTENCE)
    previous_end = 0.0
    for word in result.words:
        assert previous_end <= word.start_s <= word.end_s <= piper_clip.duration_s
        assert 0.0 <= word.probability <= 1.0
        previous_end = word.end_s
    # The speech spans most of the clip, not a sliver of it.
    assert result.words[-1].end_s - result.words[0].start_s > 0.6 * piper_clip.duration_s


@pytest.mark.slow
def test_whisper_silence_and_empty_give_empty_transcript(whisper):
    for audio in (_silence(2.0), _silence(0.0), AudioChunk(np.full(8000, 1e-4, np.float32), 8000)):
        result = whisper.transcribe(audio)
        assert result.text == "" and result.words == ()
        assert result.audio_duration_s == pytest.approx(audio.duration_s)
