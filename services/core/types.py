"""Typed payloads that flow between the four stages.

All are frozen dataclasses holding numpy arrays or plain values, so they pickle cheaply across
Ray object references and can be turned into JSON by the router (`to_json` helpers live with the
API, not here). Times are seconds on the *turn timeline*: 0 is where the avatar starts speaking.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class AudioChunk:
    """Mono PCM audio. `samples` is float32 in [-1, 1]."""

    samples: np.ndarray
    sample_rate: int
    start_s: float = 0.0

    @property
    def duration_s(self) -> float:
        return len(self.samples) / float(self.sample_rate)


@dataclass(frozen=True)
class WordTiming:
    """One recognised word with its span in the input audio."""

    word: str
    start_s: float
    end_s: float
    probability: float = 1.0


@dataclass(frozen=True)
class Transcript:
    """What the user said."""

    text: str
    words: tuple[WordTiming, ...] = ()
    language: str = "en"
    audio_duration_s: float = 0.0
    # False for an interim hypothesis of audio still arriving (live listening); the words of
    # an interim transcript may still change, those of a final one do not.
    final: bool = True


@dataclass(frozen=True)
class ChatMessage:
    """One message of a conversation, in the OpenAI chat shape."""

    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class ReplyChunk:
    """One sentence of the avatar's reply, released as soon as the LLM finished it."""

    text: str
    index: int
    tokens: int = 0
    is_last: bool = False
    first_token_s: float | None = None  # on the first chunk: LLM time to first token


@dataclass(frozen=True)
class PhonemeTiming:
    """One phoneme (IPA, as the TTS emitted it) and its span within its speech chunk."""

    phoneme: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class SpeechChunk:
    """Synthesised speech for one reply sentence.

    `samples` is float32 mono; `phonemes` are relative to the chunk's own start, and `start_s`
    places the chunk on the turn timeline (chunks of a turn are laid back to back).
    """

    samples: np.ndarray
    sample_rate: int
    text: str
    index: int
    phonemes: tuple[PhonemeTiming, ...] = ()
    start_s: float = 0.0

    @property
    def duration_s(self) -> float:
        return len(self.samples) / float(self.sample_rate)

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True)
class AvatarLook:
    """How the avatar looks for one persona; a request parameter, so one render replica serves
    every persona. `asset_path` None means the renderer's configured default head."""

    asset_path: str | None = None
    skin_rgb: tuple[float, float, float] = (0.87, 0.70, 0.60)
    background_rgb: tuple[float, float, float] = (0.16, 0.18, 0.22)


@dataclass(frozen=True)
class VideoFrame:
    """One rendered frame shown at `pts_s` on the turn timeline.

    In process a frame carries raw RGB uint8 (H, W, 3); a render replica sends it JPEG-encoded
    (`jpeg`, with `size` = (width, height)) so frames cross the network at ~1/50 the bytes, or
    as H.264 (`h264`) for live clients that asked for video (~1/3 of the JPEG bytes again).
    """

    index: int
    pts_s: float
    rgb: np.ndarray | None = None
    blendshapes: dict[str, float] = field(default_factory=dict)
    jpeg: bytes | None = None
    size: tuple[int, int] | None = None
    # Or one H.264 access unit (Annex-B) of the sentence's stream; `keyframe`: a decoder can
    # start here (each sentence's stream starts with one).
    h264: bytes | None = None
    keyframe: bool = False

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1]) if self.rgb is not None else self.size[0]

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0]) if self.rgb is not None else self.size[1]


@dataclass(frozen=True)
class Source:
    """A statement that grounded a reply, as the client shows it in a citation."""

    id: str
    source: str
    text: str
    score: float
    title: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "source": self.source,
            "title": self.title,
            "text": self.text,
            "score": round(float(self.score), 4),
        }
