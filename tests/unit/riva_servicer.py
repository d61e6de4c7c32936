"""A Riva-protocol gRPC server for tests, answering with any local ASR/TTS backend.

It implements `RivaSpeechRecognition` (Recognize, StreamingRecognize) and `RivaSpeechSynthesis`
(Synthesize, SynthesizeOnline) from the protos that ship with nvidia-riva-client, on 127.0.0.1
and a free port, so the riva backends are tested over real gRPC: the fake backends for fast
tests, Whisper and Piper for slow ones (real audio both ways). `Faults` adds what a real
deployment does to a client: an API key check, UNAVAILABLE on the first calls, slow answers.
"""

from __future__ import annotations

import contextlib
import datetime
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import riva.client.proto.riva_asr_pb2 as rasr
import riva.client.proto.riva_asr_pb2_grpc as rasr_grpc
import riva.client.proto.riva_tts_pb2 as rtts
import riva.client.proto.riva_tts_pb2_grpc as rtts_grpc
from riva.client.proto.riva_audio_pb2 import AudioEncoding

from services.core.audio import resample
from services.core.types import AudioChunk, Transcript
from services.stages.asr.base import ASRBackend
from services.stages.tts.base import TTSBackend

ONLINE_CHUNK_S = 0.1


@dataclass
class Faults:
    """What the server does besides answering."""

    api_key: str | None = None  # required as "authorization: Bearer <key>" when set
    unavailable_first: int = 0  # the first N calls are aborted with UNAVAILABLE
    delay_s: float = 0.0  # sleep before answering each call
    word_timings: bool = False  # TTS: answer enable_word_time_offsets with word timings
    interim_every_s: float = 0.5  # ASR streaming: an interim result per this much audio


@dataclass
class Record:
    """What the server saw, for assertions."""

    calls: int = 0
    metadata: list[dict[str, list[str]]] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)


class _Guard:
    def __init__(self, faults: Faults, record: Record) -> None:
        self.faults = faults
        self.record = record
        self._lock = threading.Lock()

    def enter(self, context: grpc.ServicerContext) -> None:
        meta: dict[str, list[str]] = {}
        for key, value in context.invocation_metadata():
            meta.setdefault(key, []).append(value)
        with self._lock:
            self.record.calls += 1
            self.record.metadata.append(meta)
            unavailable = self.record.calls <= self.faults.unavailable_first
        if unavailable:
            context.abort(grpc.StatusCode.UNAVAILABLE, "riva test server: warming up")
        key = self.faults.api_key
        if key is not None:
            sent = meta.get("authorization", [])
            if not sent or any(v != f"Bearer {key}" for v in sent):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid or missing API key")
        if self.faults.delay_s:
            time.sleep(self.faults.delay_s)


def _audio(data: bytes, rate: int) -> AudioChunk:
    return AudioChunk(np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0, rate)


def _alternative(transcript: Transcript, words: bool) -> Any:
    alt = rasr.SpeechRecognitionAlternative(transcript=transcript.text, confidence=0.9)
    if words:
        for w in transcript.words:
            alt.words.add(
                word=w.word,
                start_time=int(round(w.start_s * 1000)),
                end_time=int(round(w.end_s * 1000)),
                confidence=w.probability,
            )
    return alt


class ASRServicer(rasr_grpc.RivaSpeechRecognitionServicer):
    """Riva ASR answered by a local `ASRBackend`."""

    def __init__(self, backend: ASRBackend, faults: Faults) -> None:
        self.backend = backend
        self.faults = faults
        self.record = Record()
        self._guard = _Guard(faults, self.record)

    def Recognize(self, request, context):  # noqa: N802 (the protocol's name)
        self._guard.enter(context)
        self.record.requests.append(request)
        config = request.config
        if config.encoding != AudioEncoding.LINEAR_PCM or config.sample_rate_hertz <= 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expected LINEAR_PCM with a rate")
        audio = _audio(request.audio, config.sample_rate_hertz)
        result = self.backend.transcribe(audio)
        return rasr.RecognizeResponse(
            results=[
                rasr.SpeechRecognitionResult(
                    alternatives=[_alternative(result, config.enable_word_time_offsets)],
                    audio_processed=audio.duration_s,
                )
            ]
        )

    def StreamingRecognize(self, request_iterator, context):  # noqa: N802
        self._guard.enter(context)
        first = next(request_iterator)
        config = first.streaming_config
        self.record.requests.append(first)
        rate = config.config.sample_rate_hertz
        step = int(self.faults.interim_every_s * rate)
        parts: list[bytes] = []
        samples = next_interim = 0
        for request in request_iterator:
            parts.append(request.audio_content)
            samples += len(request.audio_content) // 2
            if config.interim_results and samples >= next_interim + step:
                next_interim = samples
                partial = self.backend.transcribe(_audio(b"".join(parts), rate))
                yield rasr.StreamingRecognizeResponse(
                    results=[
                        rasr.StreamingRecognitionResult(
                            alternatives=[_alternative(partial, False)],
                            is_final=False,
                            stability=0.5,
                            audio_processed=samples / rate,
                        )
                    ]
                )
        final = self.backend.transcribe(_audio(b"".join(parts), rate))
        yield rasr.StreamingRecognizeResponse(
            results=[
                rasr.StreamingRecognitionResult(
                    alternatives=[_alternative(final, config.config.enable_word_time_offsets)],
                    is_final=True,
                    audio_processed=samples / rate,
                )
            ]
        )


class TTSServicer(rtts_grpc.RivaSpeechSynthesisServicer):
    """Riva TTS answered by a local `TTSBackend`; SSML `<prosody rate>` becomes `speed`."""

    def __init__(self, backend: TTSBackend, faults: Faults) -> None:
        self.backend = backend
        self.faults = faults
        self.record = Record()
        self._guard = _Guard(faults, self.record)

    def _speak(self, request, context) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
        text, speed = request.text, 1.0
        if text.startswith("<speak>"):
            prosody = ET.fromstring(text).find("prosody")
            text = prosody.text or ""
            speed = float(prosody.get("rate", "100%").rstrip("%")) / 100.0
        rate = request.sample_rate_hz
        if request.encoding != AudioEncoding.LINEAR_PCM or rate <= 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expected LINEAR_PCM with a rate")
        voice = request.voice_name or None
        # With word timings, speak word by word so each word's span is known exactly.
        pieces = (
            text.split()
            if request.enable_word_time_offsets and self.faults.word_timings
            else [text]
        )
        audio: list[np.ndarray] = []
        words: list[tuple[str, int, int]] = []
        at = 0
        for piece in pieces:
            chunk = self.backend.synthesize(piece, voice=voice, speed=speed)
            samples = resample(chunk.samples, chunk.sample_rate, rate)
            audio.append(samples)
            words.append((piece, at * 1000 // rate, (at + samples.size) * 1000 // rate))
            at += samples.size
        pcm = (np.clip(np.concatenate(audio), -1, 1) * 32767).astype("<i2")
        return pcm, words if len(pieces) > 1 else []

    def Synthesize(self, request, context):  # noqa: N802
        self._guard.enter(context)
        self.record.requests.append(request)
        pcm, words = self._speak(request, context)
        response = rtts.SynthesizeSpeechResponse(audio=pcm.tobytes())
        for word, start, end in words:
            response.meta.words.add(word=word, start_time=start, end_time=end)
        return response

    def SynthesizeOnline(self, request_iterator, context):  # noqa: N802
        # A stream of requests since client 2.28 (one per text); older servers take one.
        self._guard.enter(context)
        for request in request_iterator:
            self.record.requests.append(request)
            pcm, words = self._speak(request, context)
            step = max(1, int(ONLINE_CHUNK_S * request.sample_rate_hz))
            for i in range(0, pcm.size, step):
                response = rtts.SynthesizeSpeechResponse(audio=pcm[i : i + step].tobytes())
                if i == 0:
                    for word, start, end in words:
                        response.meta.words.add(word=word, start_time=start, end_time=end)
                yield response


@dataclass
class RunningServer:
    uri: str
    asr: ASRServicer | None
    tts: TTSServicer | None


@contextlib.contextmanager
def riva_server(
    asr: ASRBackend | None = None,
    tts: TTSBackend | None = None,
    faults: Faults | None = None,
    tls: tuple[bytes, bytes] | None = None,
) -> Iterator[RunningServer]:
    """Serve `asr`/`tts` over the Riva protocol on 127.0.0.1 and a free port.

    Args:
        tls: (private key PEM, certificate PEM) to serve TLS; None = plaintext.
    """
    faults = faults or Faults()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    asr_servicer = ASRServicer(asr, faults) if asr is not None else None
    tts_servicer = TTSServicer(tts, faults) if tts is not None else None
    if asr_servicer is not None:
        rasr_grpc.add_RivaSpeechRecognitionServicer_to_server(asr_servicer, server)
    if tts_servicer is not None:
        rtts_grpc.add_RivaSpeechSynthesisServicer_to_server(tts_servicer, server)
    if tls is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([tls]))
    server.start()
    try:
        yield RunningServer(f"127.0.0.1:{port}", asr_servicer, tts_servicer)
    finally:
        server.stop(grace=None)


def self_signed_cert() -> tuple[bytes, bytes]:
    """(private key PEM, certificate PEM) for 127.0.0.1, made with `cryptography`."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "riva-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)
