"""Incremental transcription for batch ASR backends: re-decode the growing utterance.

While the user speaks, the whole buffer is transcribed again every `interim_every_s` of new
audio. Hypotheses of a growing buffer change at their end (a word cut in half, punctuation), so
interims follow LocalAgreement-2 (Macháček et al., "Turning Whisper into Real-Time Transcription
System", 2023): a word becomes *stable* once two consecutive hypotheses agree on it and every
word before it; stable words are never taken back. An interim's text is the stable prefix plus
the newest hypothesis' tail. Once the audio ends, one final pass over all of it is authoritative.

`StablePrefix` is the policy alone and `GrowingAudio` the buffer alone, for callers that drive
the decoding themselves (the router awaits a remote `transcribe` and cannot use a generator).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from services.core.backend import BackendError
from services.core.types import AudioChunk, Transcript

_PUNCT = re.compile(r"[^\w']+")


def _norm(word: str) -> str:
    """Word identity for agreement: case and punctuation ("station," == "Station.") ignored."""
    return _PUNCT.sub("", word.lower())


def transcript_words(transcript: Transcript) -> list[str]:
    """The words of a transcript: its word timings when it has them, else its text split."""
    if transcript.words:
        return [w.word.strip() for w in transcript.words if w.word.strip()]
    return transcript.text.split()


class StablePrefix:
    """LocalAgreement-2 over successive hypotheses of one growing utterance.

    `update(words)` takes the newest hypothesis and returns `(stable, tail)`: the words agreed
    on so far (a prefix that only grows) and the rest of the newest hypothesis after it.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start a new utterance."""
        self._previous: list[str] | None = None
        self._stable: list[str] = []

    @property
    def stable(self) -> list[str]:
        """The words agreed on so far."""
        return list(self._stable)

    def update(self, words: Sequence[str]) -> tuple[list[str], list[str]]:
        """Add the newest hypothesis; return (stable words, tail of this hypothesis)."""
        current = [w for w in (s.strip() for s in words) if w]
        keys = [_norm(w) for w in current]
        n = len(self._stable)
        consistent = keys[:n] == [_norm(w) for w in self._stable]
        if self._previous is not None and consistent:
            previous = [_norm(w) for w in self._previous]
            agreed = 0
            for a, b in zip(previous, keys, strict=False):
                if a != b:
                    break
                agreed += 1
            if agreed > n:
                # The newest spelling wins: later hypotheses see more context.
                self._stable = current[:agreed]
        self._previous = current
        return list(self._stable), current[len(self._stable) :]


class GrowingAudio:
    """The audio of one utterance as it arrives, and how much of it is not yet decoded."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._rate: int | None = None
        self._start_s = 0.0
        self._samples = 0
        self._decoded = 0

    def append(self, chunk: AudioChunk) -> None:
        """Add the next piece.

        Raises:
            BackendError: its sample rate differs from the earlier pieces'.
        """
        if self._rate is None:
            self._rate, self._start_s = int(chunk.sample_rate), chunk.start_s
        elif chunk.sample_rate != self._rate:
            raise BackendError(
                f"audio chunks of one utterance must share a sample rate: got "
                f"{chunk.sample_rate} Hz after {self._rate} Hz"
            )
        samples = np.asarray(chunk.samples, dtype=np.float32).reshape(-1)
        self._parts.append(samples)
        self._samples += samples.size

    @property
    def duration_s(self) -> float:
        return self._samples / self._rate if self._rate else 0.0

    @property
    def undecoded_s(self) -> float:
        """Audio added since the last `snapshot(mark=True)`."""
        return (self._samples - self._decoded) / self._rate if self._rate else 0.0

    def snapshot(self, *, mark: bool = True) -> AudioChunk:
        """All audio so far as one chunk; `mark` records it as decoded."""
        if len(self._parts) > 1:
            self._parts = [np.concatenate(self._parts)]
        samples = self._parts[0] if self._parts else np.zeros(0, dtype=np.float32)
        if mark:
            self._decoded = self._samples
        return AudioChunk(samples, self._rate or 16000, start_s=self._start_s)


def incremental_stream(
    transcribe: Callable[[AudioChunk], Transcript],
    chunks: Iterable[AudioChunk],
    *,
    interim_every_s: float = 0.5,
) -> Iterator[Transcript]:
    """Interim transcripts of a growing utterance, then one final transcript of all of it.

    `transcribe` is a batch call (e.g. `ASRBackend.transcribe`). After each `interim_every_s`
    of new audio the buffer is decoded again and an interim (`final=False`) is yielded when its
    text changed: stable prefix + newest tail, with the newest hypothesis' word timings. When
    `chunks` ends, the final (`final=True`) is a fresh decode of all the audio; an utterance
    with no audio gives an empty final transcript without a decode.

    Raises:
        ValueError: `interim_every_s` is not positive.
        BackendError: chunks with different sample rates, or from `transcribe`.
    """
    if not interim_every_s > 0:
        raise ValueError(f"interim_every_s must be > 0, got {interim_every_s}")
    audio = GrowingAudio()
    policy = StablePrefix()
    last_text: str | None = None
    hypothesis: Transcript | None = None
    for chunk in chunks:
        audio.append(chunk)
        if audio.undecoded_s < interim_every_s:
            continue
        hypothesis = transcribe(audio.snapshot())
        stable, tail = policy.update(transcript_words(hypothesis))
        text = " ".join(stable + tail)
        if text != last_text:
            last_text = text
            yield dataclasses.replace(hypothesis, text=text, final=False)
    if audio.duration_s == 0:
        yield Transcript(text="", audio_duration_s=0.0, final=True)
        return
    if hypothesis is None or audio.undecoded_s > 0:
        hypothesis = transcribe(audio.snapshot())
    # else: the last interim decode already saw every sample; decoding is deterministic.
    yield dataclasses.replace(hypothesis, final=True)
