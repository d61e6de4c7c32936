"""A turn's media to a live client: binary messages, paced to playback.

The pipeline produces a reply faster than it plays (or should): sending it as produced would
hand a client 15 s of frames at once, and a barge-in could not take them back. `Playout` holds
each media message until `lead_s` before the moment the client plays it (the turn's timeline:
audio `start_s`, frame `pts_s`), so cancelling the turn stops the media within one send and the
client never buffers more than the lead.

Binary media messages carry a 16-byte little-endian header, then the payload:
  u8 kind (1 = PCM16 mono audio, 2 = JPEG frame, 3 = H.264 access unit, Annex-B),
  u8 flags (bit 0: an H.264 keyframe: a decoder can start here), u16 sentence index,
  u32 sequence (audio: first sample's offset in the sentence; frame: frame index),
  f64 timeline seconds (audio: when the piece starts playing; frame: its pts_s).
Audio sample rate, sentence duration and phoneme timings arrive first in the JSON `audio` event
(with `"binary": true` and no `pcm16_b64`); the frame size in the `session` event. H.264 (a
session started with `"video": "h264"`) is one stream per sentence starting with a keyframe
(SPS/PPS in-band); a `video` event {codec, width, height} precedes the first frame of a reply
(`codec` is what WebCodecs' `VideoDecoder.configure` takes).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.core.audio import pcm16
from services.core.types import ReplyChunk, SpeechChunk, VideoFrame
from services.server.events import event_json
from services.stages.render.h264 import avc_codec_string
from services.stages.render.jpeg import to_jpeg

HEADER = struct.Struct("<BBHId")
KIND_AUDIO, KIND_JPEG, KIND_H264 = 1, 2, 3
FLAG_KEYFRAME = 1


def pack(kind: int, index: int, seq: int, t_s: float, payload: bytes, flags: int = 0) -> bytes:
    return HEADER.pack(kind, flags, index & 0xFFFF, seq & 0xFFFFFFFF, t_s) + payload


def unpack(message: bytes) -> tuple[int, int, int, float, bytes]:
    """(kind, sentence index, sequence, timeline seconds, payload) of a binary media message."""
    kind, _flags, index, seq, t_s = HEADER.unpack_from(message)
    return kind, index, seq, t_s, message[HEADER.size :]


def flags_of(message: bytes) -> int:
    return message[1]


@dataclass
class _Spoken:
    """What the client has been sent of one reply sentence, to know what it heard."""

    text: str = ""
    start_s: float = 0.0
    end_s: float = 0.0


@dataclass(order=True)
class _Item:
    t_s: float  # on the turn's timeline; -1 = as soon as possible, inf = after all media
    seq: int
    message: Any = field(compare=False)
    audio_end_s: float | None = field(default=None, compare=False)


_NOW, _LAST = -1.0, float("inf")


class Playout:
    """Paced sending of one turn's events.

    Args:
        send: sends one message (a JSON-able dict, or bytes as a binary message).
        binary: media as binary messages (live clients) or as the JSON events with base64.
        lead_s: how far ahead of playback media may be sent.
        audio_piece_s: audio is sent in pieces of this length, so a cut stops it promptly.
        held: queue but send nothing until `release` (a reply started speculatively).
    """

    def __init__(
        self,
        send: Callable[[Any], Awaitable[None]],
        *,
        binary: bool = True,
        lead_s: float = 0.3,
        audio_piece_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        held: bool = False,
    ) -> None:
        self.send, self.binary, self.lead_s = send, binary, lead_s
        self.audio_piece_s, self.clock = audio_piece_s, clock
        self.started_at: float | None = None  # when the first audio was sent: playback starts
        self.audio_sent_s = 0.0  # timeline end of the audio sent so far
        self._heap: list[_Item] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._released = asyncio.Event()
        if not held:
            self._released.set()
        self._unpaused = asyncio.Event()
        self._unpaused.set()
        self._closed = False
        self._sentences: dict[int, _Spoken] = {}
        self._video_announced = False
        self._sender = asyncio.create_task(self._run())

    # -- producer side ---------------------------------------------------------------------
    def put(self, event: Any) -> None:
        """Queue one pipeline event (raw objects from the orchestrator, or wire dicts)."""
        if isinstance(event, SpeechChunk):
            spoken = self._sentences.setdefault(event.index, _Spoken())
            spoken.start_s, spoken.end_s = event.start_s, event.end_s
            self._queue_audio(event)
        elif isinstance(event, VideoFrame):
            if event.h264 is not None and not self._video_announced:
                self._video_announced = True
                codec = avc_codec_string(event.h264) or "avc1.42c01e"
                self._push(_NOW, {"type": "video", "codec": codec,
                                  "width": event.width, "height": event.height})  # fmt: skip
            self._push(event.pts_s, self._frame_message(event))
        else:
            if isinstance(event, ReplyChunk):
                self._sentences.setdefault(event.index, _Spoken()).text = event.text
            message = event if isinstance(event, dict) else event_json(event)
            # `done` follows the last media message; captions and transcripts need not wait.
            self._push(_LAST if message.get("type") == "done" else _NOW, message)

    def _queue_audio(self, speech: SpeechChunk) -> None:
        meta = event_json(speech)
        if not self.binary:
            self._push(speech.start_s, meta, audio_end_s=speech.end_s)
            return
        meta.pop("pcm16_b64")
        meta["binary"] = True
        self._push(speech.start_s, meta)
        samples = np.asarray(speech.samples, dtype=np.float32)
        step = max(1, int(self.audio_piece_s * speech.sample_rate))
        for offset in range(0, len(samples), step):
            t = speech.start_s + offset / speech.sample_rate
            end = speech.start_s + min(len(samples), offset + step) / speech.sample_rate
            message = pack(
                KIND_AUDIO, speech.index, offset, t, pcm16(samples[offset : offset + step])
            )
            self._push(t, message, audio_end_s=end)

    def _frame_message(self, frame: VideoFrame) -> Any:
        if frame.h264 is not None:
            flags = FLAG_KEYFRAME if frame.keyframe else 0
            return pack(KIND_H264, 0, frame.index, frame.pts_s, frame.h264, flags)
        frame = to_jpeg(frame)
        if not self.binary:
            return event_json(frame)
        return pack(KIND_JPEG, 0, frame.index, frame.pts_s, frame.jpeg)

    def _push(self, t_s: float, message: Any, audio_end_s: float | None = None) -> None:
        heapq.heappush(self._heap, _Item(t_s, next(self._seq), message, audio_end_s))
        self._wake.set()

    # -- sender ----------------------------------------------------------------------------
    def _due(self, item: _Item) -> float:
        if self.started_at is None or item.t_s in (_NOW, _LAST):
            return self.clock()  # nothing plays yet, or not media: send now
        return self.started_at + item.t_s - self.lead_s

    def release(self) -> None:
        """Start sending a playout created `held` (a speculative reply the user now wants)."""
        self._released.set()

    @property
    def held(self) -> bool:
        return not self._released.is_set()

    def pause(self, paused: bool) -> None:
        """Stop sending for now (the user may be cutting in), or go on (it was a cough)."""
        if paused:
            self._unpaused.clear()
        else:
            self._unpaused.set()

    async def _run(self) -> None:
        await self._released.wait()
        while True:
            if not self._heap:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            item = self._heap[0]
            wait = self._due(item) - self.clock()
            if wait > 0:
                self._wake.clear()
                # A new item may be due sooner (a caption): wake for it.
                waiter = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({waiter}, timeout=wait)
                waiter.cancel()
                continue
            if not self._unpaused.is_set():
                await self._unpaused.wait()
                continue  # due times moved on while paused: look again
            heapq.heappop(self._heap)
            await self._send(item)

    async def _send(self, item: _Item) -> None:
        message = item.message
        if item.audio_end_s is not None:
            if self.started_at is None:
                self.started_at = self.clock()
            self.audio_sent_s = max(self.audio_sent_s, item.audio_end_s)
        await self.send(message)

    async def drain(self) -> None:
        """Wait until everything queued has been sent (the turn's `done` included)."""
        self._closed = True
        self._wake.set()
        await self._sender

    async def cancel(self) -> float:
        """Stop now: drop what is queued; returns the playback position (seconds played)."""
        self._closed = True
        self._heap.clear()
        self._sender.cancel()
        await asyncio.gather(self._sender, return_exceptions=True)
        return self.played_s()

    def played_s(self) -> float:
        """Seconds of the reply the client has played, estimated from what was sent when."""
        if self.started_at is None:
            return 0.0
        return max(0.0, min(self.clock() - self.started_at, self.audio_sent_s))

    def spoken_text(self, played_s: float) -> str:
        """The reply as far as it was heard: whole sentences, then the words of the sentence
        that was cut, in proportion to how much of it played."""
        words: list[str] = []
        for _, spoken in sorted(self._sentences.items()):
            if spoken.end_s <= spoken.start_s or played_s <= spoken.start_s:
                break
            sentence = spoken.text.split()
            if played_s >= spoken.end_s:
                words += sentence
                continue
            share = (played_s - spoken.start_s) / (spoken.end_s - spoken.start_s)
            words += sentence[: int(len(sentence) * share)]
            break
        return " ".join(words)
