"""The locust users: WebSocket conversations and one-request HTTP turns.

`ConversationUser` and `HttpTurnUser` share `AvatarUser`'s per-turn accounting: locust request
events for its stats table, and one JSONL record per turn for the runner's report.

Imports locust, so only the locust process may import it: locust monkey-patches with gevent.
Against a cluster that requires API keys, both send `$AVATAR_API_KEY` as a bearer token.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import time
from typing import Any

import gevent
import gevent.lock
import requests
import websocket
from locust import User, between, events, task

from loadtests.clips import CHUNK_S, load_clips
from loadtests.locust_settings import (
    CLIPS_DIR,
    HTTP_WEIGHT,
    KEEPALIVE_S,
    PERSONAS,
    REALTIME,
    RECORDS_PATH,
    THINK_S,
    TURN_TIMEOUT_S,
    WS_WEIGHT,
)
from loadtests.turn_errors import (
    WIRE_ERRORS,
    TurnFailed,
    TurnRejected,
    TurnTimeout,
    error_event,
    failure,
)
from loadtests.turn_trace import END_EVENTS, Trace


def auth_headers() -> dict[str, str]:
    """`Authorization: Bearer $AVATAR_API_KEY`, or nothing (an open local cluster)."""
    key = os.environ.get("AVATAR_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


CLIPS = load_clips(CLIPS_DIR)
_personas = itertools.cycle(PERSONAS)


class Recorder:
    """Appends one JSON line per turn; one write per line keeps lines whole across greenlets."""

    def __init__(self, path: str | None) -> None:
        self.file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


RECORDER = Recorder(RECORDS_PATH)


# The WebSocket users' keep-alive greenlets: killed when the test stops, so none outlives it.
KEEPERS: set[gevent.Greenlet] = set()


@events.test_stop.add_listener
def _stop_keepers(**_: Any) -> None:
    gevent.killall(list(KEEPERS), block=False)
    KEEPERS.clear()


@events.quitting.add_listener
def _close_records(**_: Any) -> None:
    RECORDER.close()


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 1)


class AvatarUser(User):
    """Shared turn accounting: locust events and the JSONL record; listening, then thinking."""

    abstract = True
    kind = ""
    think = between(*THINK_S)

    def on_start(self) -> None:
        self.persona = next(_personas)
        self.persona_id = None if self.persona == "default" else self.persona
        offset = random.randrange(len(CLIPS))
        self.clips = itertools.cycle(CLIPS[offset:] + CLIPS[:offset])
        self.user_id = f"{self.kind}-{id(self):x}"
        self.playback_end = 0.0

    def wait_time(self) -> float:
        # The reply plays out before the user thinks of the next question. Waiting here, not
        # in the task, lets locust stop a user promptly when the shape lowers the count.
        listening = max(0.0, self.playback_end - time.time()) if REALTIME else 0.0
        return listening + self.think()

    def fire(self, name: str, seconds: float, size: int = 0, exc: Exception | None = None):
        self.environment.events.request.fire(
            request_type=self.kind.upper(),
            name=f"{name}/{self.persona}",
            response_time=_ms(seconds),
            response_length=size,
            exception=exc,
            context={},
        )

    def finish(self, trace: Trace, exc: Exception | None, phase: str = "turn") -> None:
        """Record a turn: locust events for the stats table, a line for the report."""
        end = time.time()
        if exc is None and trace.done is None:
            exc = TurnFailed("stream ended without done")
        outcome = "ok"
        if isinstance(exc, TurnRejected):
            outcome = "rejected"
        elif isinstance(exc, TurnTimeout):
            outcome = "timeout"
        elif exc is not None:
            outcome = "error"
        record: dict[str, Any] = {
            "t0": round(trace.t0, 3),
            "t1": round(end, 3),
            "kind": self.kind,
            "user": self.user_id,
            "persona": self.persona,
            "phase": phase,
            "outcome": outcome,
            "status": getattr(exc, "status", None),
            "error": str(exc) if exc else None,
            "clip": trace.clip.name,
            "users": self.environment.runner.user_count if self.environment.runner else None,
            "bytes": trace.bytes,
            # Whether any of the reply had arrived: a 503 then is a turn cut short, not refused.
            "streamed": trace.audio_events + trace.frames > 0,
        }
        if outcome == "ok":
            ttfa = trace.first_audio - trace.t0 if trace.first_audio else None
            ttff = trace.first_frame - trace.t0 if trace.first_frame else None
            timings = (trace.done or {}).get("timings", {})
            record.update(
                ttfa_s=None if ttfa is None else round(ttfa, 4),
                ttff_s=None if ttff is None else round(ttff, 4),
                turn_s=round(end - trace.t0, 4),
                stall_s=round(trace.stall_s, 4),
                audio_events=trace.audio_events,
                frames=trace.frames,
                reply_audio_s=round(trace.reply_audio_s, 3),
                server={k: timings[k] for k in sorted(timings)},
            )
            if ttfa is not None:
                self.fire("ttfa", ttfa)
            if ttff is not None:
                self.fire("ttff", ttff)
            self.playback_end = trace.playback_end
        self.fire("turn", end - trace.t0, trace.bytes, exc)
        RECORDER.write(record)


class ConversationUser(AvatarUser):
    """A WebSocket conversation: speak, take in the streamed reply, listen, think, repeat."""

    weight = WS_WEIGHT
    kind = "ws"

    def on_start(self) -> None:
        super().on_start()
        self.ws: websocket.WebSocket | None = None
        # Whoever holds this reads the socket: a turn, or between turns the keeper.
        self.io = gevent.lock.Semaphore()
        self.keeper = gevent.spawn(self.keep_alive)
        KEEPERS.add(self.keeper)

    def on_stop(self) -> None:
        self.keeper.kill(block=False)
        KEEPERS.discard(self.keeper)
        self.close()

    def keep_alive(self) -> None:
        """Between turns, read the socket as a browser does, so server pings get their pongs.

        uvicorn (Serve's proxy) drops a WebSocket whose pings go unanswered for ~40 s, and
        websocket-client only answers pings inside `recv`: a user listening and thinking
        would otherwise lose its session to a broken pipe.
        """
        while True:
            gevent.sleep(KEEPALIVE_S)
            ws = self.ws
            if ws is None or not self.io.acquire(blocking=False):
                continue
            try:
                ws.settimeout(0.05)
                ws.recv()  # nothing but pings is due between turns
            except Exception:  # noqa: BLE001 - a broken socket is the next turn's to report
                pass
            finally:
                self.io.release()

    def close(self) -> None:
        if self.ws is not None:
            # Closing a broken socket is best-effort.
            with contextlib.suppress(Exception):
                self.ws.close(timeout=1)
            self.ws = None

    def url(self) -> str:
        base = (self.host or "http://127.0.0.1:8000").rstrip("/")
        return "ws" + base[len("http") :] + "/v1/session"

    def receive(self, trace: Trace, deadline: float, until: tuple[str, ...] = END_EVENTS) -> None:
        """Events until one of type `until` or an error; TurnTimeout past the deadline."""
        while True:
            remaining = deadline - time.time()
            if remaining <= 0:
                raise TurnTimeout(f"timeout after {TURN_TIMEOUT_S:g} s")
            self.ws.settimeout(remaining)
            raw = self.ws.recv()
            if trace.feed(json.loads(raw), len(raw)) in until + ("error",):
                return

    def connect(self) -> bool:
        """Open a session (a persona greets it first); a failure is recorded as a turn."""
        trace = Trace(self.kind, self.persona, next(self.clips))
        exc: Exception | None = None
        try:
            # A connect waits in Serve's queue while the router is full: bound it too.
            self.ws = websocket.create_connection(
                self.url(), timeout=TURN_TIMEOUT_S, header=auth_headers()
            )
            start: dict[str, Any] = {"type": "start"}
            if self.persona_id:
                start["persona_id"] = self.persona_id
            self.ws.send(json.dumps(start))
            self.receive(trace, time.time() + TURN_TIMEOUT_S, ("session",))
            if trace.error is None and trace.session_persona:
                self.receive(trace, time.time() + TURN_TIMEOUT_S)  # its spoken greeting
        except WIRE_ERRORS + (TurnTimeout,) as e:
            exc = failure(e, "connect")
        if exc is None and trace.error is not None:
            exc = error_event(trace.error[0], "connect")
        if exc is not None:
            self.close()
            self.finish(trace, exc, phase="connect")
            return False
        self.fire("session", time.time() - trace.t0, trace.bytes)
        return True

    @task
    def turn(self) -> None:
        with self.io:
            self.talk()

    def talk(self) -> None:
        if self.ws is None and not self.connect():
            return
        trace = Trace(self.kind, self.persona, next(self.clips))
        exc: Exception | None = None
        try:
            clip = trace.clip
            self.ws.settimeout(TURN_TIMEOUT_S)
            self.ws.send(
                json.dumps(
                    {"type": "audio_start", "format": "pcm16", "sample_rate": clip.sample_rate}
                )
            )
            for chunk in clip.chunks():
                self.ws.send_binary(chunk)
                if REALTIME:
                    gevent.sleep(CHUNK_S)  # speaking takes as long as the question lasts
            self.ws.send(json.dumps({"type": "audio_end"}))
            trace.start()
            self.receive(trace, trace.t0 + TURN_TIMEOUT_S)
        except WIRE_ERRORS + (TurnTimeout,) as e:
            exc = failure(e, "turn")
            # The socket's state is unknown (a reply may still be streaming): start afresh.
            self.close()
        if exc is None and trace.error is not None:
            exc = error_event(trace.error[0], "turn")
        self.finish(trace, exc)


class HttpTurnUser(AvatarUser):
    """One `POST /v1/turn` per question (audio in the JSON body), NDJSON events back."""

    weight = HTTP_WEIGHT
    kind = "http"

    def on_start(self) -> None:
        super().on_start()
        self.http = requests.Session()
        self.http.headers.update(auth_headers())
        self.session_id: str | None = None

    def on_stop(self) -> None:
        self.http.close()

    @task
    def turn(self) -> None:
        trace = Trace(self.kind, self.persona, next(self.clips))
        body: dict[str, Any] = {"audio_b64": trace.clip.wav_b64}
        if self.session_id:
            body["session_id"] = self.session_id
        elif self.persona_id:
            body["persona_id"] = self.persona_id
        url = (self.host or "http://127.0.0.1:8000").rstrip("/") + "/v1/turn"
        exc: Exception | None = None
        trace.start()
        deadline = trace.t0 + TURN_TIMEOUT_S
        try:
            with self.http.post(url, json=body, stream=True, timeout=(10, TURN_TIMEOUT_S)) as r:
                if r.status_code >= 400:
                    trace.bytes += len(r.content)
                    exc = error_event(r.status_code, "HTTP")
                    if r.status_code == 404:
                        self.session_id = None  # the session expired: open a new one
                else:
                    for line in r.iter_lines(chunk_size=16384):
                        if time.time() > deadline:
                            raise TurnTimeout(f"timeout after {TURN_TIMEOUT_S:g} s")
                        if line and trace.feed(json.loads(line), len(line)) in END_EVENTS:
                            break
                    self.session_id = trace.session_id or self.session_id
        except WIRE_ERRORS + (TurnTimeout,) as e:
            exc = failure(e, "turn")
        if exc is None and trace.error is not None:
            exc = error_event(trace.error[0], "turn")
        self.finish(trace, exc)
