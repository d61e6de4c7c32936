"""The ASR interface: one utterance in, its transcript with word timings out.

The base owns what every backend would otherwise repeat: the length limit, the shortcut for
input not worth a model run, loading the model on first use and serialising calls into a model
that is not re-entrant. Backends implement `_transcribe`.
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any

from services.core.backend import Backend, BackendError
from services.core.types import AudioChunk, Transcript


class ASRBackend(Backend):
    """Speech to text.

    `transcribe` takes the whole utterance and returns the transcript with word timings;
    `stream` transcribes one while it is still being spoken (interim, then final).
    """

    def transcribe(self, audio: AudioChunk) -> Transcript:
        """Transcribe mono audio at any sample rate (backends resample as they need).

        Raises:
            BackendError: the audio is longer than the backend accepts, or the model failed.
        """
        limit = self._max_audio_s()
        duration = audio.duration_s
        if limit is not None and duration > limit:
            # Checked before loading: a bad request never pays for the model.
            raise BackendError(
                f"audio is {duration:.1f} s long; this backend accepts at most "
                f"{limit:g} s per utterance (max_audio_s)"
            )
        shortcut = self._silence_transcript(audio)
        if shortcut is not None:
            return shortcut
        self.load()
        with self._model_lock():
            return self._transcribe(audio)

    def stream(
        self, chunks: Iterable[AudioChunk], *, interim_every_s: float = 0.5
    ) -> Iterator[Transcript]:
        """Transcribe an utterance while it arrives.

        `chunks` are consecutive pieces of one utterance at one sample rate. Yields interim
        transcripts (`final=False`) as the audio grows, at most one per `interim_every_s` of new
        audio, then exactly one final transcript (`final=True`) of all of it once `chunks` ends.
        The default re-decodes the growing buffer with a stable-prefix policy
        (`services.stages.asr.incremental`), so every batch backend streams; a backend with a
        native streaming recogniser (Riva) overrides this.
        """
        from services.stages.asr.incremental import incremental_stream

        return incremental_stream(self.transcribe, chunks, interim_every_s=interim_every_s)

    def _max_audio_s(self) -> float | None:
        """The longest utterance accepted, in seconds; None = no limit."""
        return None

    def _silence_transcript(self, audio: AudioChunk) -> Transcript | None:
        """The transcript of input not worth running the model on (too short, near silent),
        or None to run the model."""
        return None

    def _model_lock(self) -> contextlib.AbstractContextManager[Any]:
        """Held around `_transcribe`: nothing by default (the model is re-entrant); a backend
        whose model is not returns a lock (`self._lock`, or a process-wide one)."""
        return contextlib.nullcontext()

    @abstractmethod
    def _transcribe(self, audio: AudioChunk) -> Transcript:
        """Transcribe with the loaded model; `audio` passed the checks above."""
