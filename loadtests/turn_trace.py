"""What a client sees of one turn: when its first audio and frame came, stalls, and its end.

Fed one event at a time by either kind of locust user; it knows nothing of locust or sockets.
"""

from __future__ import annotations

import time
from typing import Any

from loadtests.clips import Clip


class Trace:
    """What a client sees of one turn: first audio/frame times, playback stalls, the end.

    Playback starts when the first frame arrives (audio and video together, as a player
    would); an audio chunk or frame arriving after its place on that timeline is a stall.
    """

    def __init__(self, kind: str, persona: str, clip: Clip) -> None:
        self.kind, self.persona, self.clip = kind, persona, clip
        self.t0 = time.time()
        self.first_audio: float | None = None
        self.first_frame: float | None = None
        self.pending_audio: list[float] = []  # start_s of audio that came before any frame
        self.stall_s = 0.0
        self.audio_events = self.frames = self.bytes = 0
        self.reply_audio_s = 0.0
        self.done: dict[str, Any] | None = None
        self.error: tuple[int, str] | None = None
        self.session_id: str | None = None
        self.session_persona: str | None = None

    def start(self) -> None:
        """The user's input has ended: the turn's clock starts now."""
        self.t0 = time.time()

    def feed(self, message: dict[str, Any], size: int) -> str | None:
        """Take one event; returns its type."""
        now = time.time()
        self.bytes += size
        kind = message.get("type")
        if kind == "audio":
            self.audio_events += 1
            if self.first_audio is None:
                self.first_audio = now
            start = float(message.get("start_s", 0.0))
            self.reply_audio_s = max(self.reply_audio_s, start + float(message["duration_s"]))
            self._late(now, start)
        elif kind == "frame":
            self.frames += 1
            if self.first_frame is None:
                self.first_frame = now
            self._late(now, float(message.get("pts_s", 0.0)))
        elif kind == "session":
            self.session_id = message.get("session_id")
            self.session_persona = message.get("persona_id")
        elif kind == "done":
            self.done = message
        elif kind == "error":
            self.error = (int(message.get("status", 500)), str(message.get("reason", "")))
        return kind

    def _late(self, now: float, at_s: float) -> None:
        if self.first_frame is not None:
            self.stall_s = max(self.stall_s, now - (self.first_frame + at_s))

    @property
    def playback_end(self) -> float:
        """When a client playing the reply from its first frame would finish."""
        return (self.first_frame or time.time()) + self.reply_audio_s


# Event types that end a turn.
END_EVENTS = ("done", "error")
