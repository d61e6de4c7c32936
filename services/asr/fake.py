"""A fake ASR for tests and load tests: no model, a fixed transcript, tunable cost and faults."""

from __future__ import annotations

import random
import threading
import time
from typing import ClassVar

from pydantic import Field

from services.asr.base import ASRBackend
from services.backend import BackendError, BackendOptions, Capabilities
from services.types import AudioChunk, Transcript, WordTiming


class FakeASROptions(BackendOptions):
    """Knobs of the fake ASR."""

    text: str = Field("Hello, who are you?", description="Transcript returned for any audio.")
    language: str = Field("en", description="Language reported in the transcript.")
    latency_s: float = Field(0.0, ge=0.0, le=60.0, description="Fixed delay per call.")
    rtf: float = Field(
        0.0, ge=0.0, le=10.0, description="Extra delay as a fraction of the input duration."
    )
    failure_rate: float = Field(0.0, ge=0.0, le=1.0, description="Chance a call raises.")
    seed: int = Field(0, description="Seed of the failure draws (reproducible runs).")


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
        self._rng = random.Random(self.options.seed)
        self._rng_lock = threading.Lock()

    def transcribe(self, audio: AudioChunk) -> Transcript:
        self.load()
        opts = self.options
        with self._rng_lock:
            fail = self._rng.random() < opts.failure_rate
        duration = audio.duration_s
        delay = opts.latency_s + opts.rtf * duration
        if delay > 0:
            time.sleep(delay)
        if fail:
            raise BackendError(f"fake asr: injected failure (failure_rate={opts.failure_rate})")
        tokens = opts.text.split()
        step = duration / len(tokens) if tokens else 0.0
        words = tuple(
            WordTiming(word=w, start_s=i * step, end_s=(i + 1) * step) for i, w in enumerate(tokens)
        )
        return Transcript(
            text=opts.text.strip(), words=words, language=opts.language, audio_duration_s=duration
        )
