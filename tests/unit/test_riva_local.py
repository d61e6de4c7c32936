"""The riva backends over loopback gRPC with real models behind the test server.

Piper speaks through the Riva TTS protocol, Whisper listens through the Riva ASR protocol, so
real audio crosses the wire both ways (16-bit PCM, resampling, streaming chunks) and the text
must survive the round trip.
"""

from __future__ import annotations

import re

import pytest

pytest.importorskip("riva.client")
pytest.importorskip("piper")
pytest.importorskip("faster_whisper")

from services.core.registry import create_backend  # noqa: E402
from services.core.types import AudioChunk  # noqa: E402
from tests.unit.riva_servicer import Faults, riva_server  # noqa: E402
from tests.unit.test_tts import assert_valid_speech  # noqa: E402

pytestmark = pytest.mark.slow

SENTENCE = "Hello, my name is Ada. I can help you find the nearest train station today."


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


@pytest.fixture(scope="module")
def server():
    # No generator noise: the same audio every run, so Whisper's words are reproducible.
    piper = create_backend("tts", "piper", {"noise_scale": 0.0, "noise_w": 0.0})
    whisper = create_backend("asr", "whisper")
    with riva_server(asr=whisper, tts=piper, faults=Faults(interim_every_s=1.5)) as running:
        yield running
    piper.close()
    whisper.close()


@pytest.fixture(scope="module")
def speech(server):
    tts = create_backend(
        "tts", "riva", {"uri": server.uri, "sample_rate_hz": 16000, "timeout_s": 120}
    )
    chunk = tts.synthesize(SENTENCE)
    tts.close()
    return chunk


def test_piper_speech_over_riva_has_phonemes_over_the_audio(speech):
    assert_valid_speech(speech, SENTENCE)
    assert speech.sample_rate == 16000
    assert 2.0 < speech.duration_s < 10.0


def test_whisper_transcribes_piper_over_riva(server, speech):
    asr = create_backend("asr", "riva", {"uri": server.uri, "timeout_s": 120})
    result = asr.transcribe(AudioChunk(speech.samples, speech.sample_rate))
    assert _words(result.text) == _words(SENTENCE)
    assert _words(" ".join(w.word for w in result.words)) == _words(SENTENCE)
    previous = 0.0
    for word in result.words:
        assert previous <= word.start_s <= word.end_s <= speech.duration_s
        previous = word.end_s


def test_whisper_streams_piper_over_riva(server, speech):
    asr = create_backend("asr", "riva", {"uri": server.uri, "timeout_s": 120})
    step = speech.sample_rate // 5
    chunks = [
        AudioChunk(speech.samples[i : i + step], speech.sample_rate)
        for i in range(0, speech.samples.size, step)
    ]
    results = list(asr.stream(chunks, interim_every_s=1.0))
    assert any(not r.final for r in results[:-1]) and results[-1].final
    assert sum(r.final for r in results) == 1
    assert _words(results[-1].text) == _words(SENTENCE)
    # Interims are hypotheses of a prefix of the audio.
    assert all(len(_words(r.text)) <= len(_words(SENTENCE)) + 2 for r in results[:-1])


def test_word_timings_from_the_server_place_piper_phonemes(server):
    server.tts.faults.word_timings = True
    try:
        tts = create_backend("tts", "riva", {"uri": server.uri, "timeout_s": 120})
        chunk = tts.synthesize(SENTENCE)
        assert tts.health()["last_timing_source"] == "riva_words"
    finally:
        server.tts.faults.word_timings = False
    assert_valid_speech(chunk, SENTENCE)
