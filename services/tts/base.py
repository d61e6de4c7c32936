"""The TTS interface: one sentence in, speech with phoneme timings out."""

from __future__ import annotations

from abc import abstractmethod

from services.backend import Backend
from services.types import SpeechChunk


class TTSBackend(Backend):
    """Sentence-level synthesis.

    The pipeline calls `synthesize` once per reply sentence as sentences arrive, which is what
    makes TTS stream. The returned chunk has `index=0, start_s=0`; the caller re-stamps it onto
    the turn timeline with `dataclasses.replace`. `phonemes` must cover the audio (timings are
    relative to the chunk start) so the renderer can lip-sync.
    """

    @abstractmethod
    def synthesize(self, text: str, *, voice: str | None = None, speed: float = 1.0) -> SpeechChunk:
        """Synthesise `text`. `voice` selects a speaker/voice where the backend has several;
        `speed` > 1 speaks faster."""
