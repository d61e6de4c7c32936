"""A fake TTS for tests and load tests: no model, deterministic output, tunable cost and faults.

It produces a voiced-like signal (a harmonic tone under a syllable-rate envelope) whose length is
proportional to the text, with evenly spaced consonant/vowel phonemes covering it, so everything
downstream (lip sync, rendering, streaming) sees realistic shapes. Latency, real-time factor and
failure rate are knobs, driven by the same config as the real backends.
"""

from __future__ import annotations

import zlib
from typing import ClassVar

import numpy as np
from pydantic import Field

from services.core.backend import BackendOptions, Capabilities
from services.core.types import PhonemeTiming, SpeechChunk
from services.stages.fake_options import FakeLatencyOptions, FaultInjector
from services.stages.tts.base import TTSBackend

_CONSONANTS = ("m", "t", "s", "l", "k", "n", "p", "d", "f", "b")
_VOWELS = ("a", "i", "o", "e", "u", "ə")


class FakeTTSOptions(FakeLatencyOptions):
    """Knobs of the fake TTS (failure and latency knobs come from `FakeLatencyOptions`)."""

    seconds_per_char: float = Field(0.06, gt=0.0, le=1.0, description="Audio per text character.")
    phoneme_s: float = Field(0.08, gt=0.0, le=1.0, description="Duration of one fake phoneme.")
    sample_rate: int = Field(22050, ge=8000, le=48000, description="Output sample rate.")
    rtf: float = Field(
        0.0, ge=0.0, le=10.0, description="Extra delay as a fraction of the audio produced."
    )


class FakeTTS(TTSBackend):
    """Test/load-test TTS: deterministic synthetic "speech" with fake phoneme timings.

    Output length is `seconds_per_char * len(text) / speed`; phonemes alternate consonant and
    vowel, `phoneme_s` each, and tile the audio exactly; the envelope peaks on the vowels. The
    pitch depends on `voice` (a hash of its file name), so different voices are
    distinguishable. Each call sleeps `latency_s + rtf * audio duration` and fails with
    `BackendError` with probability `failure_rate` (seeded).
    """

    name: ClassVar[str] = "fake"
    Options: ClassVar[type[BackendOptions]] = FakeTTSOptions
    capabilities: ClassVar[Capabilities] = Capabilities(timings=True)
    options: FakeTTSOptions

    def __init__(self, options: BackendOptions | None = None) -> None:
        super().__init__(options)
        self._faults = FaultInjector(
            self.options,
            f"fake tts: injected failure (failure_rate={self.options.failure_rate})",
        )

    def _synthesize(self, text: str, *, voice: str | None, speed: float) -> SpeechChunk:
        opts = self.options
        rate = opts.sample_rate
        n = max(1, int(round(len(text.strip()) * opts.seconds_per_char / speed * rate)))
        self._faults.call(opts.latency_s + opts.rtf * n / rate)
        phone_n = max(1, int(round(opts.phoneme_s / speed * rate)))
        edges = list(range(0, n, phone_n)) + [n]
        if len(edges) > 2 and edges[-1] - edges[-2] < phone_n // 2:
            del edges[-2]  # a sliver at the end joins the last phoneme
        phonemes = tuple(
            PhonemeTiming(
                _VOWELS[(i // 2) % len(_VOWELS)] if i % 2 else _CONSONANTS[(i // 2) % 10],
                edges[i] / rate,
                edges[i + 1] / rate,
            )
            for i in range(len(edges) - 1)
        )
        # By the voice's file name, not its full path: a pack's voice resolves to an absolute
        # path that differs per machine, and the pitch must not (tests compare pitches).
        name = voice.replace("\\", "/").rsplit("/", 1)[-1] if voice else None
        f0 = 100.0 + (zlib.crc32(name.encode()) % 120 if name else 20)
        t = np.arange(n, dtype=np.float64) / rate
        tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
        # One syllable per consonant+vowel pair, loudest mid-vowel.
        syllable_hz = rate / (2.0 * phone_n)
        envelope = 0.5 - 0.5 * np.cos(2 * np.pi * syllable_hz * (t - 0.5 * phone_n / rate))
        samples = (0.25 * tone * envelope).astype(np.float32)
        return SpeechChunk(samples=samples, sample_rate=rate, text=text, index=0, phonemes=phonemes)
