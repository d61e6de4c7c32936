"""NVIDIA Riva speech recognition over gRPC (a Riva server or NIM, usually on a GPU node).

`transcribe` is one offline `Recognize` call with word time offsets; `stream` is Riva's own
streaming recognition (`StreamingRecognize` with interim results), so live listening gets
interim hypotheses from the server's streaming decoder instead of re-decoding a growing buffer.
Audio is sent as 16-bit LINEAR_PCM at its own sample rate (Riva resamples to its model's rate).
The connection, deadlines, errors and reconnects are `services.stages.riva_grpc`'s.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from services.core.backend import BackendError, BackendOptions, Capabilities
from services.core.types import AudioChunk, Transcript, WordTiming
from services.stages.asr.base import ASRBackend
from services.stages.riva_grpc import INSTALL_HINT, Replay, RivaConnection, RivaConnectionOptions
from services.stages.sdk import import_sdk


class RivaASROptions(RivaConnectionOptions):
    """Options of the Riva ASR backend (connection options from `RivaConnectionOptions`)."""

    language_code: str = Field(
        "en-US", min_length=2, max_length=35, description="BCP-47 language of the speech."
    )
    model: str | None = Field(
        None, max_length=200, description="Riva ASR model name; None = the server's default."
    )
    automatic_punctuation: bool = Field(True, description="Ask Riva to punctuate the text.")
    profanity_filter: bool = Field(False, description="Ask Riva to mask profanities.")
    max_audio_s: float = Field(
        60.0,
        gt=0.0,
        le=600.0,
        description="Longest utterance accepted; a streaming call's deadline is this plus "
        "timeout_s.",
    )


class RivaASR(ASRBackend):
    """Riva ASR: offline recognition with word timings, and native streaming recognition.

    Riva returns one result per segment it finds (it splits long audio at pauses); the
    transcript joins them, and word times are the server's, in seconds from the audio start.
    Only the best alternative is requested (`max_alternatives=1`).
    """

    name: ClassVar[str] = "riva"
    Options: ClassVar[type[BackendOptions]] = RivaASROptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        streaming=True, timings=True, gpu=True, needs_network=True
    )
    options: RivaASROptions

    def __init__(self, options: BackendOptions | None = None) -> None:
        super().__init__(options)
        opts = self.options
        self._connection = RivaConnection(
            opts, "riva asr", stream_deadline_s=opts.max_audio_s + opts.timeout_s
        )

    def _load(self) -> None:
        import_sdk("riva.client", INSTALL_HINT)
        self._connection.open()

    def close(self) -> None:
        with self._lock:
            self._connection.close()
            super().close()

    def health(self) -> dict[str, Any]:
        info = super().health()
        info["uri"] = self.options.uri
        return info

    def _max_audio_s(self) -> float | None:
        return self.options.max_audio_s

    def _silence_transcript(self, audio: AudioChunk) -> Transcript | None:
        if audio.samples.size == 0:  # Riva rejects a request without audio
            return Transcript(text="", language=self.options.language_code, audio_duration_s=0.0)
        return None

    def _config(self, sample_rate: int) -> Any:
        riva_client = import_sdk("riva.client", INSTALL_HINT)
        opts = self.options
        config = riva_client.RecognitionConfig(
            encoding=riva_client.AudioEncoding.LINEAR_PCM,
            sample_rate_hertz=int(sample_rate),
            audio_channel_count=1,
            language_code=opts.language_code,
            max_alternatives=1,
            enable_automatic_punctuation=opts.automatic_punctuation,
            profanity_filter=opts.profanity_filter,
            enable_word_time_offsets=True,
            verbatim_transcripts=False,
        )
        if opts.model:
            config.model = opts.model
        return config

    def _transcribe(self, audio: AudioChunk) -> Transcript:
        riva_client = import_sdk("riva.client", INSTALL_HINT)
        config = self._config(audio.sample_rate)
        data = _pcm16(audio.samples)
        response = self._connection.call(
            lambda auth: riva_client.ASRService(auth).offline_recognize(data, config)
        )
        duration = audio.duration_s
        texts, words = [], []
        for result in response.results:
            if result.alternatives:
                best = result.alternatives[0]
                texts.append(best.transcript.strip())
                words.extend(best.words)
        return Transcript(
            text=" ".join(t for t in texts if t),
            words=_word_timings(words, duration),
            language=self.options.language_code,
            audio_duration_s=duration,
        )

    def stream(
        self, chunks: Iterable[AudioChunk], *, interim_every_s: float = 0.5
    ) -> Iterator[Transcript]:
        """Riva streaming recognition: interim transcripts (`final=False`) while audio arrives,
        at most one per `interim_every_s` of audio sent, then exactly one final transcript.

        Raises:
            BackendError: chunks change sample rate, the audio exceeds `max_audio_s`, or the
                server failed (see `riva_grpc.RivaConnection.error`).
        """
        self.load()
        return self._stream(iter(chunks), interim_every_s)

    def _stream(self, chunks: Iterator[AudioChunk], interim_every_s: float) -> Iterator[Transcript]:
        riva_client = import_sdk("riva.client", INSTALL_HINT)
        opts = self.options
        first = next(chunks, None)
        if first is None:
            yield Transcript(text="", language=opts.language_code, final=True)
            return
        sent = _Sent(first.sample_rate, opts.max_audio_s)
        replay = Replay(sent.requests(itertools.chain([first], chunks)))
        config = riva_client.StreamingRecognitionConfig(
            config=self._config(first.sample_rate), interim_results=True
        )

        def responses(auth: Any) -> Iterator[Any]:
            return riva_client.ASRService(auth).streaming_response_generator(
                replay.attempt(), config
            )

        finals: list[tuple[str, list[Any]]] = []
        partial = ""
        last_interim_s = 0.0
        for response in self._connection.stream(responses, streaming_requests=True):
            replay.settle()
            for result in response.results:
                if not result.alternatives:
                    continue
                best = result.alternatives[0]
                if result.is_final:
                    finals.append((best.transcript.strip(), list(best.words)))
                    partial = ""
                else:
                    partial = best.transcript.strip()
            if sent.error is not None:
                raise sent.error
            if partial and sent.seconds - last_interim_s >= interim_every_s:
                last_interim_s = sent.seconds
                text = " ".join(t for t, _ in finals if t)
                yield Transcript(
                    text=f"{text} {partial}".strip(),
                    language=opts.language_code,
                    audio_duration_s=sent.seconds,
                    final=False,
                )
        if sent.error is not None:
            raise sent.error
        if partial:  # a hypothesis the server never finalised is still what was heard
            finals.append((partial, []))
        words = [w for _, ws in finals for w in ws]
        yield Transcript(
            text=" ".join(t for t, _ in finals if t),
            words=_word_timings(words, sent.seconds),
            language=opts.language_code,
            audio_duration_s=sent.seconds,
            final=True,
        )


class _Sent:
    """Encodes the chunks gRPC pulls and counts the audio sent; a bad chunk ends the request
    stream and is reported by the consumer (an exception on gRPC's thread would be lost)."""

    def __init__(self, rate: int, max_audio_s: float) -> None:
        self.rate = rate
        self.max_audio_s = max_audio_s
        self.samples = 0
        self.error: BackendError | None = None

    @property
    def seconds(self) -> float:
        return self.samples / float(self.rate)

    def requests(self, chunks: Iterable[AudioChunk]) -> Iterator[bytes]:
        for chunk in chunks:
            if chunk.sample_rate != self.rate:
                self.error = BackendError(
                    f"riva asr: chunks of one stream must share a sample rate "
                    f"({chunk.sample_rate} Hz after {self.rate} Hz)"
                )
                return
            if self.seconds + chunk.duration_s > self.max_audio_s:
                self.error = BackendError(
                    f"riva asr: the stream is longer than {self.max_audio_s:g} s (max_audio_s)"
                )
                return
            self.samples += int(np.asarray(chunk.samples).size)
            yield _pcm16(chunk.samples)


def _pcm16(samples: np.ndarray) -> bytes:
    x = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
    return (x * 32767.0).round().astype("<i2").tobytes()


def _word_timings(words: Iterable[Any], duration: float) -> tuple[WordTiming, ...]:
    """Riva's words (times in ms) as `WordTiming`s clamped into the audio, non-decreasing."""
    out: list[WordTiming] = []
    last = 0.0
    for w in words:
        text = w.word.strip()
        if not text:
            continue
        start = min(max(w.start_time / 1000.0, last), duration)
        end = min(max(w.end_time / 1000.0, start), duration)
        confidence = float(w.confidence)
        out.append(WordTiming(text, start, end, confidence if 0.0 < confidence <= 1.0 else 1.0))
        last = end
    return tuple(out)
