"""A live WebSocket client for the benchmark: a real-time microphone in, timestamped events out.

`LiveClient` speaks the live protocol of `services.server.socket_session` (`start` with binary
media, `listen`) over any transport with `send(str | bytes)` / `recv()` / `close()`: a real
`websockets` connection (`WebSocketTransport`) or `MemorySocket`, an in-memory socket whose
server face is the one Starlette gives the router, so a `SocketSession` runs unchanged in
process. A sender task plays queued clips in 20 ms PCM16 frames at real-time pace, and silence
whenever nothing is queued, as a microphone never stops; `play` returns when given samples were
sent. Every message received is logged with its arrival time; `loadtests.live_turns` measures
the turns from that log afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.server.media import KIND_AUDIO, KIND_H264, KIND_JPEG, unpack

FRAME_S = 0.02
# A sender this far behind real time (a stalled event loop) restarts its clock: it does not
# burst seconds of audio at once, which no microphone does.
MAX_BEHIND_S = 0.5


# --- transports ---------------------------------------------------------------------------------


class _Channel:
    """One direction of a `MemorySocket`: items go to a queue read in the receiver's loop
    (thread-safe, so client and server may run in different threads)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop, self.queue = loop, asyncio.Queue()

    def put(self, item: Any) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class MemorySocket:
    """An in-memory WebSocket. Its own methods are the server face (what `SocketSession` uses
    of Starlette's `WebSocket`); `client` is the other end.

    Args:
        server_loop: the loop the server face runs in (default: the running loop).
        client_loop: the loop the client end runs in (default: the running loop).
    """

    def __init__(
        self,
        server_loop: asyncio.AbstractEventLoop | None = None,
        client_loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._to_server = _Channel(server_loop or asyncio.get_running_loop())
        self._to_client = _Channel(client_loop or asyncio.get_running_loop())
        self.client = _ClientEnd(self._to_server, self._to_client)
        self.closed: tuple[int, str | None] | None = None

    async def accept(self, subprotocol: str | None = None) -> None:
        return None

    async def receive(self) -> dict[str, Any]:
        return await self._to_server.queue.get()

    async def send_json(self, data: Any) -> None:
        # Starlette's encoding, so the bytes counted are the bytes a client receives.
        self._to_client.put(json.dumps(data, separators=(",", ":"), ensure_ascii=False))

    async def send_bytes(self, data: bytes) -> None:
        self._to_client.put(bytes(data))

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed = (code, reason)
        self._to_client.put(None)


class _ClientEnd:
    def __init__(self, to_server: _Channel, to_client: _Channel) -> None:
        self._to_server, self._to_client = to_server, to_client

    async def send(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            self._to_server.put({"type": "websocket.receive", "bytes": data})
        else:
            self._to_server.put({"type": "websocket.receive", "text": data})

    async def recv(self) -> str | bytes | None:
        """The next message; None once the server closed the socket."""
        return await self._to_client.queue.get()

    async def close(self) -> None:
        self._to_server.put({"type": "websocket.disconnect", "code": 1000})
        self._to_client.put(None)


class WebSocketTransport:
    """A `websockets` client connection with the same face as `MemorySocket.client`."""

    def __init__(self, connection) -> None:
        self.connection = connection

    @classmethod
    async def connect(cls, url: str) -> WebSocketTransport:
        import websockets

        # No size limit: a frame is tens of kB, but a server may batch; no compression: the
        # benchmark measures the bytes the protocol sends.
        return cls(await websockets.connect(url, max_size=None, compression=None))

    async def send(self, data: str | bytes) -> None:
        await self.connection.send(data)

    async def recv(self) -> str | bytes | None:
        import websockets

        try:
            return await self.connection.recv()
        except websockets.ConnectionClosed:
            return None

    async def close(self) -> None:
        await self.connection.close()


# --- what arrives ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One message as the client got it. `kind` is the JSON event's type, or `media_audio` /
    `media_frame` for binary media (then `t_s` is its place on the reply's timeline)."""

    t: float
    kind: str
    size: int
    data: dict[str, Any] = field(default_factory=dict)
    t_s: float | None = None

    @property
    def media(self) -> bool:
        return self.kind.startswith("media_") or self.kind == "audio"

    @property
    def final_transcript(self) -> bool:
        # Final transcripts are the turn's own `transcript` event, which has no "final" key.
        return self.kind == "transcript" and self.data.get("final", True) is not False


def classify(message: str | bytes, t: float) -> Received:
    """A received WebSocket message, parsed (binary media by its `services.server.media`
    header; text as a JSON event)."""
    if isinstance(message, bytes):
        kind, _index, _seq, t_s, _payload = unpack(message)
        names = {KIND_AUDIO: "media_audio", KIND_JPEG: "media_frame", KIND_H264: "media_frame"}
        return Received(t, names.get(kind, f"media_{kind}"), len(message), t_s=t_s)
    data = json.loads(message)
    kind = data.get("type", "?") if isinstance(data, dict) else "?"
    return Received(t, kind, len(message.encode()), data if isinstance(data, dict) else {})


# --- the client ---------------------------------------------------------------------------------


@dataclass
class Played:
    """When a clip's voiced span went out: monotonic times of the frames holding its first
    and last voiced samples (set once sent)."""

    first_voiced: asyncio.Future
    last_voiced: asyncio.Future


class LiveClient:
    """One live session: opens it, streams the microphone, logs what arrives.

    Args:
        transport: `MemorySocket.client` or a `WebSocketTransport`.
        sample_rate: of the PCM16 frames sent.
    """

    def __init__(self, transport, sample_rate: int = 16000, video: str = "jpeg") -> None:
        self.video = video
        self.transport, self.sample_rate = transport, sample_rate
        self.frame_bytes = 2 * int(round(sample_rate * FRAME_S))
        self.log: list[Received] = []
        self.session_id: str | None = None
        self._pending = bytearray()
        self._markers: list[list[Any]] = []  # [byte offset in _pending, future]
        self._arrived = asyncio.Condition()
        self._tasks: list[asyncio.Task] = []
        self.closed = False

    async def open(self, timeout_s: float = 60.0) -> None:
        """`start` (binary media) and `listen` (16-bit PCM, VAD); then the microphone runs."""
        self._tasks.append(asyncio.create_task(self._receive()))
        start = {"type": "start", "media": "binary", "video": self.video}
        await self.transport.send(json.dumps(start))
        session = self.log[await self.wait_for(lambda e: e.kind in ("session", "error"), 0,
                                               timeout_s)]  # fmt: skip
        if session.kind == "error":
            raise RuntimeError(f"start refused: {session.data}")
        self.session_id = session.data.get("session_id")
        listen = {"type": "listen", "sample_rate": self.sample_rate, "mode": "vad"}
        await self.transport.send(json.dumps(listen))
        ack = self.log[await self.wait_for(lambda e: e.kind in ("listening", "error"), 0,
                                           timeout_s)]  # fmt: skip
        if ack.kind == "error":
            raise RuntimeError(f"listen refused: {ack.data}")
        self._tasks.append(asyncio.create_task(self._send_audio()))

    async def close(self) -> None:
        self.closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.transport.close()

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.transport.send(json.dumps(message))

    def play(self, pcm: bytes, first_voiced: int, last_voiced: int) -> Played:
        """Queue a clip (PCM16 bytes) after what is queued; the futures resolve with the send
        time of the frames that hold sample `first_voiced` and sample `last_voiced`."""
        loop = asyncio.get_running_loop()
        base = len(self._pending)
        played = Played(loop.create_future(), loop.create_future())
        self._markers.append([base + 2 * first_voiced, played.first_voiced])
        self._markers.append([base + 2 * last_voiced, played.last_voiced])
        self._pending.extend(pcm)
        return played

    async def wait_for(
        self, predicate: Callable[[Received], bool], start: int, timeout_s: float
    ) -> int:
        """Index of the first logged message at or after `start` that matches; waits for it.

        Raises:
            TimeoutError: none arrived in time.
            ConnectionError: the socket closed first.
        """
        deadline = time.monotonic() + timeout_s
        index = start
        async with self._arrived:
            while True:
                while index < len(self.log):
                    if predicate(self.log[index]):
                        return index
                    index += 1
                if self.closed:
                    raise ConnectionError("the server closed the socket")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), left)

    async def _receive(self) -> None:
        try:
            while True:
                message = await self.transport.recv()
                now = time.monotonic()
                if message is None:
                    break
                entry = classify(message, now)
                async with self._arrived:
                    self.log.append(entry)
                    self._arrived.notify_all()
        finally:
            self.closed = True
            async with self._arrived:
                self._arrived.notify_all()

    async def _send_audio(self) -> None:
        step = self.frame_bytes
        due = time.monotonic()
        while True:
            frame = bytes(self._pending[:step])
            taken = len(frame)
            del self._pending[:taken]
            frame += bytes(step - taken)
            # A frame leaves when its last sample has been "recorded", as from a microphone.
            due += FRAME_S
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -MAX_BEHIND_S:
                due = time.monotonic()
            await self.transport.send(frame)
            sent = time.monotonic()
            keep = []
            for marker in self._markers:
                if marker[0] < taken:
                    if not marker[1].done():
                        marker[1].set_result(sent)
                else:
                    marker[0] -= taken
                    keep.append(marker)
            self._markers = keep


def voiced_span(samples: np.ndarray, rate: int, floor_db: float = -35.0) -> tuple[int, int]:
    """(first, last) voiced sample of a clean clip: 10 ms windows whose RMS is within
    `floor_db` of the loudest window. Raises ValueError for a silent clip."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    win = max(1, rate // 100)
    n = x.size // win
    if n == 0:
        raise ValueError("clip is shorter than 10 ms")
    rms = np.sqrt(np.mean(x[: n * win].reshape(n, win) ** 2, axis=1))
    if rms.max() <= 0:
        raise ValueError("clip is silent")
    voiced = np.flatnonzero(rms >= rms.max() * 10 ** (floor_db / 20))
    first = int(voiced[0]) * win
    last = min(x.size, (int(voiced[-1]) + 1) * win) - 1
    # Refine to the first/last sample that is itself above the window threshold.
    level = rms.max() * 10 ** (floor_db / 20)
    head = np.flatnonzero(np.abs(x[first : first + win]) >= level)
    tail = np.flatnonzero(np.abs(x[last - win + 1 : last + 1]) >= level)
    if head.size:
        first += int(head[0])
    if tail.size:
        last = last - win + 1 + int(tail[-1])
    return first, last
