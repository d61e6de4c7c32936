"""The spoken questions load-test users ask: made once per report folder, read by the users.

The runner generates them with a local TTS backend (espeak: fast, no model download, no
network), so a run needs no recorded audio; the locust users load them as `Clip`s, each both
a WAV file (HTTP turns) and raw PCM in mic-sized pieces (WebSocket turns).
"""

from __future__ import annotations

import base64
import io
import os
import wave
from dataclasses import dataclass, field
from pathlib import Path

QUESTIONS = (
    "Hello! Can you tell me a little about yourself?",
    "What do you think makes a team work well together?",
    "How should I prepare for my first day at a new job?",
    "What is the best way to learn something new?",
)
# Mic-sized pieces: the router buffers them until `audio_end`, as with a real microphone.
CHUNK_S = 0.25


def make_clips(folder: Path, backend: str = "espeak", questions=QUESTIONS) -> Path:
    """Spoken question WAVs from a local TTS backend (espeak: fast, no model download)."""
    from services.core.audio import write_wav
    from services.core.registry import create_backend

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("q*.wav"))) >= len(questions):
        return folder
    tts = create_backend("tts", backend)
    tts.load()
    for i, question in enumerate(questions):
        speech = tts.synthesize(question)
        write_wav(folder / f"q{i}.wav", speech.samples, speech.sample_rate)
    return folder


@dataclass(frozen=True)
class Clip:
    """One spoken question: the WAV file (HTTP) and its raw PCM (WebSocket)."""

    name: str
    wav: bytes
    pcm: bytes
    sample_rate: int
    wav_b64: str = field(repr=False)

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate

    @classmethod
    def from_wav(cls, name: str, data: bytes) -> Clip:
        with wave.open(io.BytesIO(data)) as w:
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                raise ValueError(f"{name}: question clips must be mono 16-bit PCM WAV")
            pcm, rate = w.readframes(w.getnframes()), w.getframerate()
        return cls(name, data, pcm, rate, base64.b64encode(data).decode())

    def chunks(self) -> list[bytes]:
        step = 2 * int(self.sample_rate * CHUNK_S)
        return [self.pcm[i : i + step] for i in range(0, len(self.pcm), step)]


def load_clips(folder: str | None = None) -> list[Clip]:
    """The question clips in `folder` (made here, under $TMPDIR, when none is given)."""
    if not folder:
        # Run by hand without the runner: make the clips here (espeak, no network).
        folder = str(make_clips(Path(os.environ.get("TMPDIR", "/tmp")) / "avatar-loadtest-clips"))
    paths = sorted(Path(folder).glob("*.wav"))
    if not paths:
        raise RuntimeError(f"no question clips (*.wav) in {folder}")
    return [Clip.from_wav(p.name, p.read_bytes()) for p in paths]
