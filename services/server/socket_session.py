"""One WebSocket conversation: the message protocol, independent of Ray.

Client -> server (text messages are JSON objects with a "type"):
  {"type": "start", "persona_id"?, "session_id"?, "media"?: "json"|"binary",
   "video"?: "jpeg"|"h264"}
        open or resume a session; a persona then greets (and discloses it is an AI) aloud.
        "binary": audio and frames arrive as binary messages paced to playback
        (`services.server.media`); "json" (default): base64 inside JSON events, unpaced.
        "video": "h264" (binary media only) sends frames as H.264 instead of JPEG (~1/3 the
        bytes).
  {"type": "listen", "sample_rate": 16000, "mode"?: "vad"|"push_to_talk"}
        live microphone: every later binary message is raw 16-bit mono PCM (20-40 ms frames).
        "vad": the server finds where the user starts and stops speaking; "push_to_talk":
        the audio between the first frame and {"type": "end_of_speech"} is one utterance.
        Speech while the avatar talks interrupts it (barge-in).
  {"type": "interrupt", "played_s"?}   stop the reply now (a Stop button); `played_s` is the
                                       client's playback position, if it knows it
  {"type": "text", "text": "..."}      a typed turn (interrupts a reply in progress)
  {"type": "audio_start", "format": "file"|"pcm16", "sample_rate"?}, binary messages, then
  {"type": "audio_end"}                a whole recorded utterance (clients with a file)
Server -> client: the events of `services.server.events`, and in live mode `speech_started`,
interim `transcript` events (`"final": false`), `speech_stopped`, and `interrupted`
{"played_s", "spoken"} when a reply is cut off. A protocol error is an `error` event and the
socket stays open.

Authentication (`services.server.auth`) happens when the socket connects, before `start`; the
key is checked again before each text message (a turn, `start`), so a key revoked mid-session
gets an `error` event (401) and the socket is closed with code 4401 and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from services.core.config import LiveSettings
from services.core.types import Transcript, VideoFrame
from services.live.listener import Listener
from services.live.vad import VADError
from services.server.auth import ANONYMOUS, WS_CLOSE_CODES, Principal
from services.server.conversation import Conversation, Interruption
from services.server.limits import RetryLater
from services.server.media import Playout
from services.server.requests import (
    ApiError,
    TurnInput,
    check_id,
    decode_audio,
    pcm16_audio,
    valid_text,
)
from services.stages.render.jpeg import to_jpeg


class SocketSession:
    """One WebSocket: `start`, then typed, recorded or live spoken turns."""

    def __init__(
        self,
        conversation: Conversation,
        max_audio_bytes: int,
        ws: Any,
        principal: Principal = ANONYMOUS,
        recheck: Callable[[], None] | None = None,
        live: LiveSettings | None = None,
    ) -> None:
        self.conversation, self.max_audio_bytes, self.ws = conversation, max_audio_bytes, ws
        self.principal, self.recheck = principal, recheck
        self.live = live or LiveSettings()
        self.session = None
        self.audio: bytearray | None = None
        self.audio_format = ("file", 0)
        self.binary_media = False
        self.video = "jpeg"
        self.listener: Listener | None = None
        self.speculative: Transcript | None = None  # what a held reply answers
        self.reply: asyncio.Task | None = None  # the turn being spoken
        self.playout: Playout | None = None
        self.cut: Interruption | None = None
        self._send_lock = asyncio.Lock()
        self._mic_samples = 0  # live audio not yet charged to the key (under one second)
        self._mic_refused_until = 0.0  # monotonic time until which live audio is dropped

    async def send(self, message: Any) -> None:
        # One message at a time: the reply, the listener and errors send from different tasks.
        async with self._send_lock:
            if isinstance(message, bytes):
                await self.ws.send_bytes(message)
            else:
                await self.ws.send_json(message)

    async def send_error(self, status: int, reason: str, **extra: Any) -> None:
        await self.send({"type": "error", "status": status, "reason": reason, **extra})

    async def refuse(self, exc: ApiError) -> None:
        """An `error` event, then close with the status's code (4401/4403) and the reason."""
        await self.send_error(exc.status, exc.reason)
        await self.ws.close(code=WS_CLOSE_CODES.get(exc.status, 1008), reason=exc.reason[:120])

    async def run(self) -> None:
        try:
            await self._receive()
        finally:
            await self.stop_reply(None)
            if self.listener is not None:
                await self.listener.close()

    async def _receive(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                if message.get("bytes") is not None:
                    await self.add_audio(message["bytes"])
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
            except RecursionError:
                await self.send_error(400, "malformed JSON: nested too deeply")
            except ApiError as exc:
                await self.send_error(exc.status, exc.reason, **getattr(exc, "extra", {}))

    async def add_audio(self, data: bytes) -> None:
        if self.audio is not None:  # a recorded utterance is being uploaded
            if len(self.audio) + len(data) > self.max_audio_bytes:
                self.audio = None
                raise ApiError(413, f"audio exceeds {self.max_audio_bytes} bytes; turn discarded")
            self.audio.extend(data)
        elif self.listener is not None:
            if not self._meter_microphone(len(data) // 2):
                return  # over the key's audio limit: dropped, and the client was told
            try:
                await self.listener.feed(data)
            except VADError as exc:
                raise ApiError(422, f"live audio must be PCM16 mono: {exc}") from None
        else:
            raise ApiError(409, "binary audio before audio_start or listen")

    def _meter_microphone(self, samples: int) -> bool:
        """Charge live audio to the key's audio seconds per minute as it arrives; False while
        it is refused. The first refusal raises (an `error` event with `retry_after_s`); the
        frames until then are dropped without an event per frame."""
        now = time.monotonic()
        if now < self._mic_refused_until:
            return False
        limiter, listener = self.conversation.limiter, self.listener
        if limiter is None or listener is None:
            return True
        self._mic_samples += samples
        seconds, self._mic_samples = divmod(self._mic_samples, listener.sample_rate)
        try:
            limiter.charge_audio(self.principal.key_id, self.principal.tenant, seconds)
        except RetryLater as exc:
            self._mic_refused_until = now + exc.retry_after_s
            raise
        return True

    async def handle(self, msg: Any) -> None:
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise ApiError(422, 'each text message must be a JSON object with a "type"')
        kind = msg["type"]
        if kind == "start":
            await self.start(msg)
        elif kind == "listen":
            await self.listen(msg)
        elif kind == "end_of_speech":
            if self.listener is None:
                raise ApiError(409, "end_of_speech without listen")
            await self.listener.end_of_speech()
        elif kind == "interrupt":
            played = msg.get("played_s")
            if played is not None and (not isinstance(played, int | float) or played < 0):
                raise ApiError(422, "played_s must be a number >= 0")
            await self.stop_reply("client", played)
        elif kind == "text":
            text = valid_text(msg.get("text"), "text")
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

    async def start(self, msg: dict[str, Any]) -> None:
        media, video = msg.get("media", "json"), msg.get("video", "jpeg")
        if media not in ("json", "binary"):
            raise ApiError(422, "media must be json or binary")
        if video not in ("jpeg", "h264") or (video == "h264" and media != "binary"):
            raise ApiError(422, 'video must be jpeg or h264 (h264 needs "media": "binary")')
        resume = check_id(msg.get("session_id"), "session_id")
        persona_id = check_id(msg.get("persona_id"), "persona_id")
        await self.stop_reply(None)
        self.binary_media, self.video = media == "binary", video
        if resume:
            self.session = self.conversation.session(resume, self.principal)
        else:
            self.session = self.conversation.open_session(persona_id, self.principal)
        await self.send(self.conversation.session_event(self.session))
        if not resume and self.session.persona_id is not None:  # a persona greets
            greeting = self.conversation.greeting_events(self.session, wire=_raw, video=self.video)
            self.speak(greeting)

    async def listen(self, msg: dict[str, Any]) -> None:
        rate, mode = msg.get("sample_rate"), msg.get("mode", "vad")
        if not isinstance(rate, int) or not 8000 <= rate <= 48000:
            raise ApiError(422, "listen needs sample_rate, an integer from 8000 to 48000")
        if mode not in ("vad", "push_to_talk"):
            raise ApiError(422, "mode must be vad or push_to_talk")
        if self.listener is not None:
            await self.listener.close()
        self.listener = Listener(
            self.conversation.stages.transcribe,
            self.live,
            rate,
            push_to_talk=mode == "push_to_talk",
            emit=self.send,
            on_utterance=self._utterance,
            speaking=self._speaking,
            on_barge_in=lambda: self.stop_reply("barge_in"),
            on_speculate=self._speculate,
            on_retract=self._retract,
            on_pause=lambda paused: self.playout is not None and self.playout.pause(paused),
        )
        await self.send({"type": "listening", "sample_rate": rate, "mode": mode})

    def _speaking(self) -> bool:
        """Whether the avatar is talking (a held, speculative reply is not yet)."""
        reply, playout = self.reply, self.playout
        return reply is not None and not reply.done() and playout is not None and not playout.held

    async def _speculate(self, transcript: Transcript) -> None:
        """The user paused: start answering what they said so far, output held back."""
        try:
            await self.turn(TurnInput(transcript=transcript), held=True)
            self.speculative = transcript
        except ApiError:
            pass  # refused (a limit): the real turn, if it comes, will say so

    async def _retract(self) -> None:
        """The user went on speaking: drop the reply started on their pause."""
        self.speculative = None
        if self.playout is not None and self.playout.held:
            await self.stop_reply(None)

    async def _utterance(self, transcript: Transcript) -> None:
        """The listener heard a whole utterance: it is the next turn."""
        held, self.speculative = self.speculative, None
        playout, reply = self.playout, self.reply
        same = held is not None and held.text == transcript.text
        if same and playout is not None and playout.held and reply is not None and not reply.done():
            playout.release()  # the pause was the end of the turn: the reply is under way
            # Counted now that it is kept: a dropped speculative turn costs the key nothing.
            self.conversation.charge_turn(self.session.owner_key_id, self.session.tenant)
            return
        try:
            await self.turn(TurnInput(transcript=transcript))
        except ApiError as exc:  # refused (a limit, overload): say so, keep listening
            await self.send_error(exc.status, exc.reason, **getattr(exc, "extra", {}))

    async def turn(self, request: TurnInput, *, held: bool = False) -> None:
        if self.binary_media or self.listener is not None:
            await self.stop_reply("new_turn")  # a live client moved on: cut the reply
        elif self.reply is not None:
            # A JSON client's turns queue, as they always did: the reply plays out first.
            await asyncio.gather(self.reply, return_exceptions=True)
        if self.session is None:
            self.session = self.conversation.open_session(None, self.principal)
            await self.send(self.conversation.session_event(self.session))
        cut = Interruption()
        events = self.conversation.turn_events(
            self.session, request, charge=not held, wire=_raw, cut=cut, video=self.video
        )
        self.speak(events, cut, held=held)

    def speak(self, events, cut: Interruption | None = None, *, held: bool = False) -> None:
        """Run a reply (a turn's or the greeting's events) in the background, paced."""
        playout = Playout(
            self.send,
            binary=self.binary_media,
            lead_s=self.live.media_lead_s if self.binary_media else float("inf"),
            audio_piece_s=self.live.audio_piece_s,
            held=held,
        )
        self.playout = playout

        self.cut = cut

        async def run() -> None:
            async with contextlib.aclosing(events) as stream:
                async for event in stream:
                    if isinstance(event, VideoFrame) and event.rgb is not None:
                        # In process frames come raw: encode off the event loop, which must
                        # keep reading the microphone (VAD, barge-in) and pacing media.
                        event = await asyncio.to_thread(to_jpeg, event)
                    playout.put(event)
            await playout.drain()
            if cut is not None:
                cut.settle()  # played to the end: the audit row says what was said

        self.reply = asyncio.create_task(run())
        self.reply.add_done_callback(self._reply_done)

    def _reply_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            # Turn errors arrive as `error` events; this is the socket failing mid-send, or a
            # bug: tell the client if it is still there.
            asyncio.ensure_future(self._report(task.exception()))

    async def _report(self, exc: BaseException) -> None:
        with contextlib.suppress(Exception):
            await self.send_error(500, f"reply failed: {type(exc).__name__}")

    async def stop_reply(self, reason: str | None, played_s: float | None = None) -> None:
        """Cut the reply in progress, if any (barge-in, Stop, a new turn, the socket closed)."""
        task, playout = self.reply, self.playout
        if task is None or task.done() or playout is None:
            return
        if playout.held:
            reason = None  # nothing of it was sent: nothing to tell the client
            if self.cut is not None:
                self.cut.discarded = True
        position = await playout.cancel()
        if played_s is not None:
            position = min(position, played_s)  # the client knows better what it has played
        if self.cut is not None:
            self.cut.interrupted = reason is not None
            self.cut.spoken, self.cut.played_s = playout.spoken_text(position), position
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if self.cut is not None:
            self.cut.settle()  # the pipeline had finished: the row waited for playback
        if reason is not None:
            await self.send(
                {
                    "type": "interrupted",
                    "reason": reason,
                    "played_s": round(position, 3),
                    "spoken": self.cut.spoken if self.cut else "",
                }
            )


def _raw(event: Any) -> Any:
    # The playout takes the pipeline's objects and encodes them itself (binary media, or the
    # JSON events with base64): it must see the sentences and their audio, in either mode, to
    # know what a cut-off user heard.
    return event
