"""NVIDIA Riva text to speech over gRPC, with phoneme timings for lip sync.

Speech comes from `SynthesizeOnline` (Riva's streaming synthesis, 16-bit LINEAR_PCM at
`sample_rate_hz`; since client 2.28 the call streams requests too, one text each, and this
backend sends one); the streamed pieces are joined into the one `SpeechChunk` per sentence that
the TTS interface returns, and the time to the first piece is measured (`health()`).

Riva's protocol carries no phoneme timings. What it has (riva_tts.proto, client 2.28):
`SynthesizeSpeechResponseMetadata.processed_text` + `predicted_durations`, documented as an
experimental per-token duration list "subject to future breaking changes", with no unit or token
alphabet, so it cannot be mapped to phonemes reliably; and `words` (`WordTiming`: word,
start/end ms), returned when `enable_word_time_offsets` is set and the model aligns words
(e.g. Magpie TTS). So the phonemes come from the local espeak-ng phonemizer (the `espeak`
backend's, whose relative phoneme durations are realistic) and are placed on Riva's audio:
inside each word's span when Riva returned usable word timings, otherwise stretched over the
audio's voiced part (first to last frame above a level relative to its peak).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, ClassVar
from xml.sax.saxutils import escape

import numpy as np
from pydantic import Field

from services.core.backend import BackendError, BackendOptions, Capabilities
from services.core.types import PhonemeTiming, SpeechChunk
from services.stages.riva_grpc import INSTALL_HINT, RivaConnection, RivaConnectionOptions
from services.stages.sdk import MissingSDKError, import_sdk
from services.stages.tts.base import TTSBackend
from services.stages.tts.espeak import EspeakOptions, EspeakTTS
from services.stages.tts.timing import PAUSE, phoneme_track

_LOG = logging.getLogger(__name__)
# Riva's SSML prosody rate range, in percent of normal speed.
_RATE_MIN, _RATE_MAX = 25, 250
_FRAME_S = 0.010


class RivaTTSOptions(RivaConnectionOptions):
    """Options of the Riva TTS backend (connection options from `RivaConnectionOptions`)."""

    voice_name: str | None = Field(
        None,
        max_length=200,
        description="Riva voice, e.g. 'English-US.Female-1'; None = the server's first voice "
        "for language_code.",
    )
    language_code: str = Field(
        "en-US", min_length=2, max_length=35, description="BCP-47 language of the text."
    )
    sample_rate_hz: int = Field(
        22050, ge=8000, le=48000, description="Output rate Riva resamples its audio to."
    )
    word_timings: bool = Field(
        True,
        description="Ask Riva for word timings (enable_word_time_offsets) to anchor the "
        "phonemes; servers or models without them are handled the same as False.",
    )
    phonemizer_voice: str = Field(
        "en-us", max_length=50, description="espeak-ng voice that phonemizes the text."
    )
    voiced_dbfs: float = Field(
        -35.0,
        ge=-90.0,
        le=-5.0,
        description="Frames this far below the loudest one count as silence when placing "
        "phonemes without word timings.",
    )


class RivaTTS(TTSBackend):
    """Riva TTS returning float32 speech at `sample_rate_hz` with estimated phoneme timings.

    Phoneme labels are espeak-ng IPA units (as the `espeak` backend's), pauses "_". The timings
    are an alignment of the text's phonemes to Riva's audio, not the model's own durations (see
    the module docstring). `synthesize(voice=...)` takes a Riva voice name; `speed` is sent as
    SSML `<prosody rate>` (clamped to Riva's 25-250 %).
    """

    name: ClassVar[str] = "riva"
    Options: ClassVar[type[BackendOptions]] = RivaTTSOptions
    capabilities: ClassVar[Capabilities] = Capabilities(timings=True, gpu=True, needs_network=True)
    options: RivaTTSOptions

    def __init__(self, options: BackendOptions | None = None) -> None:
        super().__init__(options)
        self._connection = RivaConnection(self.options, "riva tts")
        self._phonemizer = EspeakTTS(EspeakOptions(voice=self.options.phonemizer_voice))
        self._first_audio_s: float | None = None
        self._timing_source: str | None = None

    def _load(self) -> None:
        import_sdk("riva.client", INSTALL_HINT)
        try:
            self._phonemizer.load()
        except MissingSDKError as exc:
            raise MissingSDKError(
                "riva tts: the phoneme timings for lip sync need the espeak-ng phonemizer: "
                "pip install espeakng-loader (part of avatar-serve[local])",
                name=exc.name,
            ) from exc
        self._connection.open()

    def close(self) -> None:
        with self._lock:
            self._connection.close()
            super().close()

    def health(self) -> dict[str, Any]:
        info = super().health()
        info["uri"] = self.options.uri
        info["last_first_audio_s"] = self._first_audio_s
        info["last_timing_source"] = self._timing_source
        return info

    def _synthesize(self, text: str, *, voice: str | None, speed: float) -> SpeechChunk:
        riva_client = import_sdk("riva.client", INSTALL_HINT)
        opts = self.options
        rate = opts.sample_rate_hz
        request_text = text
        if speed != 1.0:
            percent = int(round(min(max(speed * 100.0, _RATE_MIN), _RATE_MAX)))
            request_text = f'<speak><prosody rate="{percent}%">{escape(text)}</prosody></speak>'
        voice_name = voice or opts.voice_name

        def call(auth: Any) -> Any:
            return riva_client.SpeechSynthesisService(auth).synthesize_online(
                request_text,
                voice_name=voice_name,
                language_code=opts.language_code,
                encoding=riva_client.AudioEncoding.LINEAR_PCM,
                sample_rate_hz=rate,
                enable_word_time_offsets=True if opts.word_timings else None,
            )

        parts: list[bytes] = []
        words: list[Any] = []
        start = time.perf_counter()
        first_audio_s = None
        for response in self._connection.stream(call):
            if response.audio and first_audio_s is None:
                first_audio_s = time.perf_counter() - start
            parts.append(response.audio)
            words.extend(response.meta.words)
        pcm = b"".join(parts)
        if len(pcm) < 2:
            raise BackendError(f"{self._connection.where} returned no audio for {text!r}")
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
        self._first_audio_s = first_audio_s
        _LOG.debug("riva tts: first audio after %.3f s", first_audio_s or 0.0)
        spans = _word_spans(words, samples.size, rate)
        if spans:
            onsets = self._onsets_in_words(spans)
            self._timing_source = "riva_words"
        else:
            onsets = self._onsets_over_voice(text, samples, rate)
            self._timing_source = "text_estimate"
        phonemes = phoneme_track(onsets, samples.size, rate)
        return SpeechChunk(samples=samples, sample_rate=rate, text=text, index=0, phonemes=phonemes)

    def _phones(self, text: str) -> tuple[list[PhonemeTiming], float]:
        """The spoken phonemes of `text` (leading/trailing pauses dropped) and their total
        span in espeak's timing; empty when the text has nothing speakable."""
        try:
            chunk = self._phonemizer.synthesize(text)
        except BackendError:
            return [], 0.0
        phones = list(chunk.phonemes)
        while phones and phones[0].phoneme == PAUSE:
            phones.pop(0)
        while phones and phones[-1].phoneme == PAUSE:
            phones.pop()
        if not phones:
            return [], 0.0
        return phones, phones[-1].end_s - phones[0].start_s

    @staticmethod
    def _place(
        phones: Sequence[PhonemeTiming], span_s: float, start: int, end: int
    ) -> list[tuple[str, int]]:
        """Onsets of `phones` stretched linearly onto samples [start, end)."""
        origin = phones[0].start_s
        scale = (end - start) / span_s if span_s > 0 else 0.0
        return [(p.phoneme, start + int(round((p.start_s - origin) * scale))) for p in phones]

    def _onsets_in_words(self, spans: list[tuple[str, int, int]]) -> list[tuple[str, int]]:
        onsets: list[tuple[str, int]] = []
        for word, start, end in spans:
            phones, span_s = self._phones(word)
            if phones:
                onsets.extend(self._place(phones, span_s, start, end))
                onsets.append((PAUSE, end))  # until the next word starts
        return onsets

    def _onsets_over_voice(
        self, text: str, samples: np.ndarray, rate: int
    ) -> list[tuple[str, int]]:
        phones, span_s = self._phones(text)
        if not phones:
            return []
        start, end = _voiced_span(samples, rate, self.options.voiced_dbfs)
        return [*self._place(phones, span_s, start, end), (PAUSE, end)]


def _word_spans(words: Sequence[Any], total: int, rate: int) -> list[tuple[str, int, int]]:
    """Riva's word timings (ms) as sample spans, or [] when they are missing or unusable
    (outside the audio, overlapping, or all empty) and the text estimate is safer."""
    spans: list[tuple[str, int, int]] = []
    cursor = 0
    for w in words:
        start = int(round(w.start_time / 1000.0 * rate))
        end = int(round(w.end_time / 1000.0 * rate))
        if start < cursor or end < start or end > total + rate // 50:
            return []
        if w.word.strip() and end > start:
            spans.append((w.word.strip(), start, min(end, total)))
        cursor = end
    return spans


def _voiced_span(samples: np.ndarray, rate: int, voiced_dbfs: float) -> tuple[int, int]:
    """Sample range from the first to the last 10 ms frame within `voiced_dbfs` of the
    loudest frame; the whole audio when nothing stands out."""
    frame = max(1, int(rate * _FRAME_S))
    n = samples.size // frame
    if n == 0:
        return 0, samples.size
    rms = np.sqrt(np.mean(np.square(samples[: n * frame].reshape(n, frame), dtype=np.float64), 1))
    peak = float(rms.max())
    if peak <= 0:
        return 0, samples.size
    voiced = np.flatnonzero(rms >= peak * 10 ** (voiced_dbfs / 20.0))
    return int(voiced[0]) * frame, min(samples.size, (int(voiced[-1]) + 1) * frame)
