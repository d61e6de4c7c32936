"""Unit tests for incremental ASR: the stable-prefix policy and `ASRBackend.stream`."""

from __future__ import annotations

import re

import numpy as np
import pytest

from services.core.backend import BackendError
from services.core.registry import create_backend
from services.core.types import AudioChunk, Transcript
from services.stages.asr.incremental import (
    GrowingAudio,
    StablePrefix,
    incremental_stream,
    transcript_words,
)

RATE = 16000


def _chunks(seconds: float, step_s: float = 0.1, rate: int = RATE):
    n = int(step_s * rate)
    for i in range(int(round(seconds / step_s))):
        yield AudioChunk(np.full(n, 0.1, np.float32), rate, start_s=i * step_s)


class Scripted:
    """A batch transcribe that returns scripted hypotheses in turn and records its inputs."""

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)
        self.durations: list[float] = []

    def __call__(self, audio: AudioChunk) -> Transcript:
        self.durations.append(audio.duration_s)
        text = self.texts[min(len(self.durations), len(self.texts)) - 1]
        return Transcript(text=text, audio_duration_s=audio.duration_s)


# --- StablePrefix -----------------------------------------------------------------------------


def test_words_become_stable_when_two_hypotheses_agree():
    p = StablePrefix()
    assert p.update(["Hello"]) == ([], ["Hello"])
    assert p.update(["Hello", "wor"]) == (["Hello"], ["wor"])
    assert p.update(["Hello", "world,", "how"]) == (["Hello"], ["world,", "how"])
    assert p.update(["hello", "World.", "how", "are"]) == (["hello", "World.", "how"], ["are"])


def test_stable_words_are_never_taken_back():
    p = StablePrefix()
    p.update(["I", "want", "a", "train"])
    p.update(["I", "want", "a", "train", "to"])
    assert p.stable == ["I", "want", "a", "train"]
    # The model changes its mind about a stable word: the promise holds, the tail follows.
    assert p.update(["I", "won't", "a", "train", "to", "Paris"]) == (
        ["I", "want", "a", "train"],
        ["to", "Paris"],
    )
    assert p.update(["I", "won't", "a", "train", "to", "Paris"])[0] == ["I", "want", "a", "train"]
    assert p.update(["I"]) == (["I", "want", "a", "train"], [])
    p.reset()
    assert p.stable == [] and p.update(["new"]) == ([], ["new"])


def test_transcript_words_prefers_word_timings():
    asr = create_backend("asr", "fake", {"text": "one two three"})
    result = asr.transcribe(AudioChunk(np.zeros(RATE, np.float32), RATE))
    assert transcript_words(result) == ["one", "two", "three"]
    assert transcript_words(Transcript(text=" a  b ")) == ["a", "b"]


# --- incremental_stream -----------------------------------------------------------------------


def test_interims_then_one_final_of_all_audio():
    script = Scripted("what", "what is the", "what is the near", "what is the nearest", "final")
    out = list(incremental_stream(script, _chunks(2.2), interim_every_s=0.5))
    assert [t.final for t in out] == [False, False, False, False, True]
    assert [t.text for t in out[:-1]] == [
        "what",
        "what is the",
        "what is the near",
        "what is the nearest",
    ]
    # One decode per 0.5 s of new audio, then the final over everything.
    assert script.durations == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.2])
    assert out[-1].text == "final"
    assert out[-1].audio_duration_s == pytest.approx(2.2)


def test_final_reuses_an_interim_decode_of_all_the_audio():
    script = Scripted("a", "a b")
    out = list(incremental_stream(script, _chunks(1.0), interim_every_s=0.5))
    assert [(t.text, t.final) for t in out] == [("a", False), ("a b", False), ("a b", True)]
    assert script.durations == pytest.approx([0.5, 1.0])


def test_interim_text_is_stable_prefix_plus_newest_tail():
    script = Scripted("I want", "I want to go", "I won't to go home", "final text")
    out = list(incremental_stream(script, _chunks(1.3), interim_every_s=0.4))
    assert [t.text for t in out] == [
        "I want",
        "I want to go",
        "I want to go home",  # "want" was agreed on: kept
        "final text",
    ]
    assert [t.final for t in out] == [False, False, False, True]


def test_unchanged_interims_are_not_repeated():
    script = Scripted("same")
    out = list(incremental_stream(script, _chunks(2.0), interim_every_s=0.5))
    assert [(t.text, t.final) for t in out] == [("same", False), ("same", True)]
    assert len(script.durations) == 4  # the final reuses the decode at 2.0 s


def test_no_audio_gives_an_empty_final_without_decoding():
    script = Scripted("never")
    assert list(incremental_stream(script, [])) == [Transcript(text="", final=True)]
    assert script.durations == []


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="interim_every_s"):
        list(incremental_stream(Scripted("x"), _chunks(1.0), interim_every_s=0))
    mixed = [
        AudioChunk(np.zeros(160, np.float32), 16000),
        AudioChunk(np.zeros(80, np.float32), 8000),
    ]
    with pytest.raises(BackendError, match="sample rate"):
        list(incremental_stream(Scripted("x"), mixed))


def test_growing_audio_keeps_the_first_start_time():
    buf = GrowingAudio()
    buf.append(AudioChunk(np.ones(1600, np.float32), RATE, start_s=3.0))
    buf.append(AudioChunk(np.ones(800, np.float32), RATE, start_s=3.1))
    assert buf.undecoded_s == pytest.approx(0.15)
    snap = buf.snapshot()
    assert snap.start_s == 3.0 and snap.samples.size == 2400
    assert buf.undecoded_s == 0.0 and buf.duration_s == pytest.approx(0.15)


def test_fake_backend_streams_through_the_base_class():
    asr = create_backend("asr", "fake", {"text": "Hello, who are you?"})
    out = list(asr.stream(_chunks(1.5, step_s=0.02), interim_every_s=0.5))
    assert [t.final for t in out] == [False, True]
    assert out[0].text == "Hello, who are you?"
    assert out[-1].text == "Hello, who are you?" and out[-1].audio_duration_s == pytest.approx(1.5)


def test_backend_errors_propagate_from_the_stream():
    asr = create_backend("asr", "fake", {"failure_rate": 1.0})
    with pytest.raises(BackendError, match="injected"):
        list(asr.stream(_chunks(1.0)))


# No generator noise: the same clip every run, so the transcript cannot vary with it. (CI on
# 8bd09ab once heard a trailing "thank you"; 12 local runs with the noise did not.)
PIPER_NO_NOISE = {"noise_scale": 0.0, "noise_w": 0.0}


@pytest.mark.slow
def test_whisper_streams_piper_speech():
    pytest.importorskip("faster_whisper")
    pytest.importorskip("piper")
    from services.core.audio import resample

    speech = create_backend("tts", "piper", PIPER_NO_NOISE).synthesize(
        "Can you tell me a little bit about yourself?"
    )
    x = resample(speech.samples, speech.sample_rate, RATE)
    x = np.concatenate([x, np.zeros(RATE // 4, np.float32)])
    chunks = [AudioChunk(x[i : i + 640], RATE) for i in range(0, x.size, 640)]
    out = list(create_backend("asr", "whisper").stream(chunks, interim_every_s=0.5))
    assert out[-1].final and not any(t.final for t in out[:-1])
    assert len(out) >= 3
    words = re.sub(r"[^a-z ]", "", out[-1].text.lower()).split()
    assert words == ["can", "you", "tell", "me", "a", "little", "bit", "about", "yourself"]


# --- Whisper's short encoder window (what makes re-decoding every 0.5 s affordable) ------------


def test_trim_window_keeps_the_audio_plus_a_second():
    from services.stages.asr.whisper import trim_window

    features = np.zeros((80, 3000), np.float32)
    features[:, :250] = 0.5  # 2.5 s of audio, zero padding after it (faster-whisper's)
    assert trim_window(features, 800).shape == (80, 800)  # at least the minimum window
    assert trim_window(features[None], 300).shape == (1, 80, 400)  # 2.5 s + 1 s, whole seconds
    assert trim_window(features, 3000).shape == (80, 3000)  # 30 = the full window
    features[:, :2950] = 0.5
    assert trim_window(features, 1000).shape == (80, 3000)  # never past the real window


@pytest.mark.slow
def test_whisper_short_window_gives_the_same_transcript():
    pytest.importorskip("faster_whisper")
    pytest.importorskip("piper")
    from services.core.audio import resample

    speech = create_backend("tts", "piper", PIPER_NO_NOISE).synthesize(
        "What time does the library open?"
    )
    x = resample(speech.samples, speech.sample_rate, RATE)
    audio = AudioChunk(np.concatenate([np.zeros(3200, np.float32), x, np.zeros(3200)]), RATE)
    short = create_backend("asr", "whisper", {"min_window_s": 10}).transcribe(audio)
    full = create_backend("asr", "whisper", {"min_window_s": 30}).transcribe(audio)
    assert short.text == full.text
    assert [w.word for w in short.words] == [w.word for w in full.words]
