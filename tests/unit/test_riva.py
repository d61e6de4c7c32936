"""The riva ASR/TTS backends over real gRPC on loopback, against a Riva-protocol test server.

The server (`riva_servicer.py`) answers with the fake backends here, so these tests are fast;
`test_riva_local.py` runs the same protocol with Whisper and Piper behind it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("riva.client")

from services.core.backend import BackendError  # noqa: E402
from services.core.config import AppConfig  # noqa: E402
from services.core.registry import create_backend  # noqa: E402
from services.core.types import AudioChunk  # noqa: E402
from services.stages.tts.timing import PAUSE  # noqa: E402
from tests.unit.riva_servicer import Faults, riva_server, self_signed_cert  # noqa: E402
from tests.unit.test_tts import assert_valid_speech  # noqa: E402

TEXT = "one two three four"
SENTENCE = "Hello, my name is Ada. I can help you today."


def _tone(seconds: float, rate: int = 16000) -> AudioChunk:
    t = np.arange(int(seconds * rate)) / rate
    return AudioChunk((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate)


def _chunks(audio: AudioChunk, piece_s: float = 0.1) -> list[AudioChunk]:
    step = int(piece_s * audio.sample_rate)
    return [
        AudioChunk(audio.samples[i : i + step], audio.sample_rate)
        for i in range(0, audio.samples.size, step)
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def fake_asr():
    return create_backend("asr", "fake", {"text": TEXT})


@pytest.fixture()
def fake_tts():
    return create_backend("tts", "fake")


def _asr(uri: str, **options):
    return create_backend("asr", "riva", {"uri": uri, "retry_backoff_s": 0.0, **options})


def _tts(uri: str, **options):
    return create_backend("tts", "riva", {"uri": uri, "retry_backoff_s": 0.0, **options})


# --- config and capabilities -------------------------------------------------------------------


def test_app_config_accepts_riva_with_options():
    config = AppConfig(
        stages={
            "asr": {
                "backend": "riva",
                "options": {"uri": "riva:50051", "api_key_env": "RIVA_API_KEY", "model": "m"},
            },
            "tts": {"backend": "riva", "options": {"voice_name": "English-US.Female-1"}},
        }
    )
    assert config.stages.asr.options.api_key_env == "RIVA_API_KEY"
    assert config.stages.tts.options.sample_rate_hz == 22050
    with pytest.raises(ValueError):
        AppConfig(stages={"asr": {"backend": "riva", "options": {"api_key_env": "not a name"}}})
    with pytest.raises(ValueError):
        AppConfig(stages={"tts": {"backend": "riva", "options": {"timeout_s": 0}}})


def test_capabilities_are_declared():
    asr, tts = create_backend("asr", "riva"), create_backend("tts", "riva")
    assert asr.capabilities.streaming and asr.capabilities.timings
    assert asr.capabilities.needs_network and tts.capabilities.needs_network
    assert tts.capabilities.timings and not tts.capabilities.streaming


# --- ASR ---------------------------------------------------------------------------------------


def test_transcribe_over_grpc(fake_asr):
    with riva_server(asr=fake_asr) as server:
        asr = _asr(server.uri, model="parakeet", language_code="en-GB")
        result = asr.transcribe(_tone(2.0))
        asr.close()
    assert result.text == TEXT and result.final
    assert [w.word for w in result.words] == TEXT.split()
    assert [(w.start_s, w.end_s) for w in result.words] == [
        (0.0, 0.5),
        (0.5, 1.0),
        (1.0, 1.5),
        (1.5, 2.0),
    ]
    assert result.language == "en-GB" and result.audio_duration_s == pytest.approx(2.0)
    config = server.asr.record.requests[0].config
    assert config.sample_rate_hertz == 16000 and config.max_alternatives == 1
    assert config.enable_word_time_offsets and config.enable_automatic_punctuation
    assert config.model == "parakeet" and config.language_code == "en-GB"


def test_stream_yields_interims_then_one_final(fake_asr):
    with riva_server(asr=fake_asr, faults=Faults(interim_every_s=0.5)) as server:
        asr = _asr(server.uri)
        results = list(asr.stream(_chunks(_tone(2.0)), interim_every_s=0.5))
    assert len(results) >= 2
    assert all(not r.final for r in results[:-1]) and results[-1].final
    final = results[-1]
    assert final.text == TEXT and [w.word for w in final.words] == TEXT.split()
    assert final.audio_duration_s == pytest.approx(2.0)
    request = server.asr.record.requests[0]
    assert request.streaming_config.interim_results


def test_stream_of_nothing_is_one_empty_final(fake_asr):
    assert [(r.text, r.final) for r in _asr("127.0.0.1:1").stream([])] == [("", True)]


def test_stream_rejects_a_change_of_sample_rate(fake_asr):
    with riva_server(asr=fake_asr) as server:
        chunks = [_tone(0.5, 16000), _tone(0.5, 8000)]
        with pytest.raises(BackendError, match="sample rate"):
            list(_asr(server.uri).stream(chunks))


# --- TTS ---------------------------------------------------------------------------------------


def test_synthesize_streams_audio_with_estimated_phonemes(fake_tts):
    with riva_server(tts=fake_tts) as server:
        tts = _tts(server.uri, sample_rate_hz=16000, voice_name="English-US.Female-1")
        chunk = tts.synthesize(SENTENCE)
        health = tts.health()
    assert_valid_speech(chunk, SENTENCE)
    assert chunk.sample_rate == 16000
    expected_s = len(SENTENCE) * fake_tts.options.seconds_per_char
    assert chunk.duration_s == pytest.approx(expected_s, abs=0.01)
    assert health["last_timing_source"] == "text_estimate"
    assert health["last_first_audio_s"] is not None
    request = server.tts.record.requests[0]
    assert request.voice_name == "English-US.Female-1" and request.sample_rate_hz == 16000


def test_word_timings_from_riva_anchor_the_phonemes(fake_tts):
    with riva_server(tts=fake_tts, faults=Faults(word_timings=True)) as server:
        tts = _tts(server.uri)
        chunk = tts.synthesize(SENTENCE)
        assert tts.health()["last_timing_source"] == "riva_words"
    assert_valid_speech(chunk, SENTENCE)
    # The server spoke word by word: each word is len(word) * seconds_per_char long.
    edges, at = [], 0.0
    for word in SENTENCE.split():
        edges.append((at, at + len(word) * fake_tts.options.seconds_per_char))
        at = edges[-1][1]
    for phone in chunk.phonemes:
        if phone.phoneme != PAUSE:
            assert any(a - 0.002 <= phone.start_s and phone.end_s <= b + 0.002 for a, b in edges)
    spoken = {i for i, (a, b) in enumerate(edges) for p in chunk.phonemes if a <= p.start_s < b}
    assert spoken == set(range(len(edges)))


def test_speed_is_sent_as_ssml_prosody(fake_tts):
    with riva_server(tts=fake_tts) as server:
        tts = _tts(server.uri)
        normal = tts.synthesize("Fish & chips <today>")
        fast = tts.synthesize("Fish & chips <today>", speed=2.0)
    sent = server.tts.record.requests[1].text
    assert sent == '<speak><prosody rate="200%">Fish &amp; chips &lt;today&gt;</prosody></speak>'
    assert fast.duration_s == pytest.approx(normal.duration_s / 2, rel=0.05)
    assert fast.text == "Fish & chips <today>"


# --- connection failures -----------------------------------------------------------------------


def test_nothing_listening_is_a_clear_error():
    uri = f"127.0.0.1:{_free_port()}"
    with pytest.raises(BackendError, match="unavailable after 2 attempts") as info:
        _asr(uri, retries=1).transcribe(_tone(0.5))
    assert f"riva asr at {uri}" in str(info.value)
    with pytest.raises(BackendError, match=f"riva tts at {uri} is unavailable"):
        _tts(uri, retries=0).synthesize("hello")


def test_deadline_is_mapped(fake_asr, fake_tts):
    with riva_server(asr=fake_asr, tts=fake_tts, faults=Faults(delay_s=1.0)) as server:
        with pytest.raises(BackendError, match="did not answer within the 0.2 s deadline"):
            _asr(server.uri, timeout_s=0.2).transcribe(_tone(0.5))
        with pytest.raises(BackendError, match="riva tts .* did not answer"):
            _tts(server.uri, timeout_s=0.2).synthesize("hello")


def test_unavailable_once_then_reconnects(fake_asr, fake_tts):
    faults = Faults(unavailable_first=1)
    with riva_server(asr=fake_asr, tts=fake_tts, faults=faults) as server:
        assert _asr(server.uri, retries=1).transcribe(_tone(0.5)).text == TEXT
        assert server.asr.record.calls == 2
        assert_valid_speech(_tts(server.uri, retries=1).synthesize(SENTENCE), SENTENCE)
        assert server.tts.record.calls == 2
    with riva_server(asr=fake_asr, faults=Faults(unavailable_first=1)) as server:
        # A streaming call is replayed from its first chunk on the new channel.
        results = list(_asr(server.uri, retries=1).stream(_chunks(_tone(1.0))))
        assert results[-1].final and results[-1].audio_duration_s == pytest.approx(1.0)
        assert server.asr.record.calls == 2
    with (
        riva_server(asr=fake_asr, faults=Faults(unavailable_first=1)) as server,
        pytest.raises(BackendError, match="warming up"),
    ):
        _asr(server.uri, retries=0).transcribe(_tone(0.5))


def test_api_key_is_sent_from_the_named_environment_variable(monkeypatch, fake_asr, fake_tts):
    monkeypatch.setenv("RIVA_TEST_KEY", "s3cret")
    faults = Faults(api_key="s3cret")
    with riva_server(asr=fake_asr, tts=fake_tts, faults=faults) as server:
        assert _asr(server.uri, api_key_env="RIVA_TEST_KEY").transcribe(_tone(0.5)).text == TEXT
        _tts(server.uri, api_key_env="RIVA_TEST_KEY", function_id="fn-1").synthesize("hi")
        assert server.asr.record.metadata[0]["authorization"] == ["Bearer s3cret"]
        assert server.tts.record.metadata[0]["function-id"] == ["fn-1"]
        monkeypatch.setenv("RIVA_TEST_KEY", "wrong")
        with pytest.raises(BackendError, match=r"refused the credentials .*\$RIVA_TEST_KEY"):
            _asr(server.uri, api_key_env="RIVA_TEST_KEY").transcribe(_tone(0.5))
        with pytest.raises(BackendError, match="UNAUTHENTICATED"):
            _asr(server.uri).transcribe(_tone(0.5))
    monkeypatch.delenv("RIVA_TEST_KEY")
    with pytest.raises(BackendError, match="RIVA_TEST_KEY .* not set"):
        _asr("127.0.0.1:1", api_key_env="RIVA_TEST_KEY").load()


def test_tls_with_a_root_certificate(tmp_path, fake_asr):
    pytest.importorskip("cryptography")
    key, cert = self_signed_cert()
    (tmp_path / "ca.pem").write_bytes(cert)
    with riva_server(asr=fake_asr, tls=(key, cert)) as server:
        asr = _asr(server.uri, use_ssl=True, ssl_cert=str(tmp_path / "ca.pem"), retries=0)
        assert asr.transcribe(_tone(0.5)).text == TEXT
        with pytest.raises(BackendError, match="unavailable"):
            _asr(server.uri, retries=0).transcribe(_tone(0.5))  # plaintext to a TLS port
    with pytest.raises(BackendError, match="ssl_cert file not found"):
        _asr("127.0.0.1:1", ssl_cert=str(tmp_path / "missing.pem")).load()


_BLOCKED = r"""
import json, sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("riva", "grpc"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
sys.meta_path.insert(0, Blocker())
from services.core.registry import create_backend
errors = []
for stage in ("asr", "tts"):
    backend = create_backend(stage, "riva", {"uri": "riva:50051"})
    try:
        backend.load()
    except ImportError as exc:
        errors.append(str(exc))
print(json.dumps(errors))
"""


def test_backends_import_without_the_riva_client():
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCKED], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (
        errors
        == ["the riva backends need nvidia-riva-client: pip install 'avatar-serve[riva]'"] * 2
    )
