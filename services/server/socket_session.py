"""One WebSocket conversation: the message protocol, independent of Ray.

Client -> server (text messages are JSON objects with a "type"):
  {"type": "start", "persona_id"?, "session_id"?}  open or resume a session; a persona then
                                                   greets (and discloses it is an AI) aloud
  {"type": "text", "text": "..."}                  a typed turn
  {"type": "audio_start", "format": "file"|"pcm16", "sample_rate"?}, then binary messages with
  the audio (an encoded file, or raw 16-bit mono PCM), then {"type": "audio_end"}: a spoken turn
Server -> client: the events of `services.server.events`; a protocol error is an `error`
event and the socket stays open for the next message.

Authentication (`services.server.auth`) happens when the socket connects, before `start`; the
key is checked again before each text message (a turn, `start`), so a key revoked mid-session
gets an `error` event (401) and the socket is closed with code 4401 and the reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from services.server.auth import ANONYMOUS, WS_CLOSE_CODES, Principal
from services.server.conversation import Conversation
from services.server.requests import ApiError, TurnInput, decode_audio, pcm16_audio


class SocketSession:
    """One WebSocket: `start`, then turns of `text` or `audio_start` + binary + `audio_end`."""

    def __init__(
        self,
        conversation: Conversation,
        max_audio_bytes: int,
        ws: Any,
        principal: Principal = ANONYMOUS,
        recheck: Callable[[], None] | None = None,
    ) -> None:
        self.conversation, self.max_audio_bytes, self.ws = conversation, max_audio_bytes, ws
        self.principal, self.recheck = principal, recheck
        self.session = None
        self.audio: bytearray | None = None
        self.audio_format = ("file", 0)

    async def send_error(self, status: int, reason: str) -> None:
        await self.ws.send_json({"type": "error", "status": status, "reason": reason})

    async def refuse(self, exc: ApiError) -> None:
        """An `error` event, then close with the status's code (4401/4403) and the reason."""
        await self.send_error(exc.status, exc.reason)
        await self.ws.close(code=WS_CLOSE_CODES.get(exc.status, 1008), reason=exc.reason[:120])

    async def run(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                if message.get("bytes") is not None:
                    self.add_audio(message["bytes"])
                    continue
                if self.recheck is not None:
                    try:
                        self.recheck()
                    except ApiError as exc:
                        await self.refuse(exc)
                        return
                await self.handle(json.loads(message.get("text") or "null"))
            except json.JSONDecodeError as exc:
                await self.send_error(400, f"malformed JSON: {exc}")
            except ApiError as exc:
                await self.send_error(exc.status, exc.reason)

    def add_audio(self, data: bytes) -> None:
        if self.audio is None:
            raise ApiError(409, "binary audio before audio_start")
        if len(self.audio) + len(data) > self.max_audio_bytes:
            self.audio = None
            raise ApiError(413, f"audio exceeds {self.max_audio_bytes} bytes; turn discarded")
        self.audio.extend(data)

    async def handle(self, msg: Any) -> None:
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise ApiError(422, 'each text message must be a JSON object with a "type"')
        kind = msg["type"]
        if kind == "start":
            resume = msg.get("session_id")
            if resume:
                self.session = self.conversation.session(resume, self.principal)
            else:
                persona_id = msg.get("persona_id")
                self.session = self.conversation.open_session(persona_id, self.principal)
            await self.ws.send_json(self.conversation.session_event(self.session))
            if not resume:
                async for event in self.conversation.greeting_events(self.session):
                    await self.ws.send_json(event)
        elif kind == "text":
            text = msg.get("text")
            if not isinstance(text, str) or not text.strip():
                raise ApiError(422, "text must be a non-empty string")
            await self.turn(TurnInput(text=text))
        elif kind == "audio_start":
            fmt = msg.get("format", "file")
            rate = msg.get("sample_rate", 16000)
            if fmt not in ("file", "pcm16") or not isinstance(rate, int) or rate < 8000:
                raise ApiError(422, "audio_start needs format file|pcm16 and sample_rate >= 8000")
            self.audio, self.audio_format = bytearray(), (fmt, rate)
        elif kind == "audio_end":
            if self.audio is None:
                raise ApiError(409, "audio_end without audio_start")
            data, (fmt, rate) = bytes(self.audio), self.audio_format
            self.audio = None
            if fmt == "pcm16":
                audio = pcm16_audio(data, rate)
            else:
                audio = decode_audio(data, self.max_audio_bytes)
            await self.turn(TurnInput(audio=audio))
        else:
            raise ApiError(422, f"unknown message type {kind!r}")

    async def turn(self, request: TurnInput) -> None:
        if self.session is None:
            self.session = self.conversation.open_session(None, self.principal)
            await self.ws.send_json(self.conversation.session_event(self.session))
        async for event in self.conversation.turn_events(self.session, request):
            await self.ws.send_json(event)
