"""The render interface: speech chunks in, timestamped frames out.

The base owns loading the model on first use; backends implement `_frames`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence

from services.core.backend import Backend
from services.core.types import AvatarLook, PhonemeTiming, SpeechChunk, VideoFrame


class RenderBackend(Backend):
    """Lip-synced frame generation.

    Rendering is a pure function of the turn timeline: a frame's look depends on the phonemes
    that overlap it and on absolute time (blinks, idle head motion are seeded functions of time),
    never on which replica rendered the previous chunk. So any replica can render any chunk, and
    `render(chunk)` yields exactly the frames whose `pts_s = index / fps` lies in
    `[chunk.start_s, chunk.end_s)`; consecutive chunks give a gap-free frame sequence.
    """

    @property
    @abstractmethod
    def fps(self) -> float:
        """Frames per second of the output."""

    def render(
        self, speech: SpeechChunk, *, look: AvatarLook | None = None
    ) -> Iterator[VideoFrame]:
        """Yield the frames covering `speech` on the turn timeline."""
        self.load()
        yield from self._frames(speech.start_s, speech.end_s, speech.phonemes, look)

    def render_idle(
        self, start_s: float, end_s: float, *, look: AvatarLook | None = None
    ) -> Iterator[VideoFrame]:
        """Yield closed-mouth frames for `[start_s, end_s)`; blinks and head motion go on."""
        self.load()
        yield from self._frames(start_s, end_s, (), look)

    @abstractmethod
    def _frames(
        self,
        start_s: float,
        end_s: float,
        phonemes: Sequence[PhonemeTiming],
        look: AvatarLook | None,
    ) -> Iterator[VideoFrame]:
        """The frames with `index / fps` in `[start_s, end_s)`, lip-synced to `phonemes`
        (times relative to `start_s`); the backend is loaded."""
