"""The ASR interface."""

from __future__ import annotations

from abc import abstractmethod

from services.backend import Backend
from services.types import AudioChunk, Transcript


class ASRBackend(Backend):
    """Speech to text.

    `transcribe` takes the whole utterance (the router buffers a streamed upload until the
    client marks the end of speech) and returns the transcript with word timings.
    """

    @abstractmethod
    def transcribe(self, audio: AudioChunk) -> Transcript:
        """Transcribe mono audio at any sample rate (backends resample as they need)."""
