"""The TTS interface: one sentence in, speech with phoneme timings out.

The base owns what every backend would otherwise repeat: rejecting empty text and a
non-positive speed, loading the model on first use and serialising calls into a model that is
not re-entrant. Backends implement `_synthesize`.
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from typing import Any

from services.core.backend import Backend, BackendError
from services.core.types import SpeechChunk


class TTSBackend(Backend):
    """Sentence-level synthesis.

    The pipeline calls `synthesize` once per reply sentence as sentences arrive, which is what
    makes TTS stream. The returned chunk has `index=0, start_s=0`; the caller re-stamps it onto
    the turn timeline with `dataclasses.replace`. `phonemes` must cover the audio (timings are
    relative to the chunk start) so the renderer can lip-sync.
    """

    def synthesize(self, text: str, *, voice: str | None = None, speed: float = 1.0) -> SpeechChunk:
        """Synthesise `text`. `voice` selects a speaker/voice where the backend has several;
        `speed` > 1 speaks faster.

        Raises:
            BackendError: `text` is empty or blank, `speed` is not positive, the voice is
                unknown, or the model failed.
        """
        if not text or not text.strip():
            raise BackendError("empty text")
        if not speed > 0:
            raise BackendError(f"speed must be positive, got {speed}")
        self.load()
        with self._model_lock():
            return self._synthesize(text, voice=voice, speed=speed)

    def _model_lock(self) -> contextlib.AbstractContextManager[Any]:
        """Held around `_synthesize`: nothing by default (the model is re-entrant); a backend
        whose model is not returns a lock (`self._lock`, or a process-wide one)."""
        return contextlib.nullcontext()

    @abstractmethod
    def _synthesize(self, text: str, *, voice: str | None, speed: float) -> SpeechChunk:
        """Synthesise with the loaded model; `text` is not blank and `speed` is positive."""
