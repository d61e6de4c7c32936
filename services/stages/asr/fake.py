"""A fake ASR for tests and load tests: no model, a fixed transcript, tunable cost and faults."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from services.core.backend import BackendOptions, Capabilities
from services.core.types import AudioChunk, Transcript, WordTiming
from services.stages.asr.base import ASRBackend
from services.stages.fake_options import FakeLatencyOptions, FaultInjector


class FakeASROptions(FakeLatencyOptions):
    """Knobs of the fake ASR (failure and latency knobs come from `FakeLatencyOptions`)."""

    text: str = Field("Hello, who are you?", description="Transcript returned for any audio.")
    language: str = Field("en", description="Language reported in the transcript.")
    rtf: float = Field(
        0.0, ge=0.0, le=10.0, description="Extra delay as a fraction of the input duration."
    )


class FakeASR(ASRBackend):
    """Test/load-test ASR: returns the configured `text` for any input.

    Words get evenly spaced timings across the input audio. Each call sleeps
    `latency_s + rtf * audio duration` and fails with `BackendError` with probability
    `failure_rate`, drawn from a generator seeded with `seed`.
    """

    name: ClassVar[str] = "fake"
    Options: ClassVar[type[BackendOptions]] = FakeASROptions
    capabilities: ClassVar[Capabilities] = Capabilities(timings=True)
    options: FakeASROptions

    def __init__(self, options: BackendOptions | None = None) -> None:
        super().__init__(options)
        self._faults = FaultInjector(
            self.options,
            f"fake asr: injected failure (failure_rate={self.options.failure_rate})",
        )

    def _transcribe(self, audio: AudioChunk) -> Transcript:
        opts = self.options
        duration = audio.duration_s
        self._faults.call(opts.latency_s + opts.rtf * duration)
        tokens = opts.text.split()
        step = duration / len(tokens) if tokens else 0.0
        words = tuple(
            WordTiming(word=w, start_s=i * step, end_s=(i + 1) * step) for i, w in enumerate(tokens)
        )
        return Transcript(
            text=opts.text.strip(), words=words, language=opts.language, audio_duration_s=duration
        )
