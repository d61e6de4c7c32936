"""Locust users of the avatar cluster: WebSocket conversations and one-request HTTP turns.

`ConversationUser` holds a WebSocket session (`/v1/session`) and talks in turns: it speaks a
question clip (streamed as 16-bit PCM at the pace of speech), takes in the streamed reply as
a client playing it would, listens until the reply has finished playing, thinks, and speaks
again. `HttpTurnUser` sends each question as one `POST /v1/turn` and reads the NDJSON stream.

Custom request events (locust's stats table, per persona):
  ttfa/<persona>   time to first audio, from the end of the user's input
  ttff/<persona>   time to first video frame
  turn/<persona>   whole turn (the `done` event); failures are recorded here, with a stable
                   message per cause: "503 rejected ...", "timeout ...", "error <status>"
  session/<persona> opening a WebSocket session (and hearing a persona's greeting)
Every turn is also appended to a JSONL file (`$AVATAR_LOADTEST_RECORDS`) for the runner's
report: outcome (ok | rejected | timeout | error), latencies, playback stall, user count.

Environment (the runner `loadtests.run` sets these):
  AVATAR_LOADTEST_CLIPS         folder of question WAVs (generated with espeak if unset)
  AVATAR_LOADTEST_RECORDS       JSONL file of per-turn records (none if unset)
  AVATAR_LOADTEST_PERSONAS      comma-separated persona ids; "default" = the app's default
  AVATAR_LOADTEST_TURN_TIMEOUT_S  a turn with no `done` after this long is a timeout (60)
  AVATAR_LOADTEST_THINK_S       "lo,hi": think time between turns, seconds (2,6)
  AVATAR_LOADTEST_REALTIME      1: speak and listen at the pace of speech (default); 0: flat out
  AVATAR_LOADTEST_WS_WEIGHT / AVATAR_LOADTEST_HTTP_WEIGHT  user mix (3 / 1)
  AVATAR_LOADTEST_SHAPE         a `loadtests.shapes` spec; without it, --users/--run-time rule

    locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:8000 -u 4 -t 60s
"""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import json
import os
import random
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import gevent.lock
import requests
import websocket
from locust import LoadTestShape, User, between, events, task

# locust puts only this file's folder on sys.path; the shapes live in the `loadtests` package.
_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from loadtests.shapes import shape_from_env  # noqa: E402


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


TURN_TIMEOUT_S = _env_float("AVATAR_LOADTEST_TURN_TIMEOUT_S", 60.0)
THINK_S = tuple(float(x) for x in os.environ.get("AVATAR_LOADTEST_THINK_S", "2,6").split(","))
REALTIME = os.environ.get("AVATAR_LOADTEST_REALTIME", "1").strip() not in ("0", "false", "no")
PERSONAS = [p.strip() for p in os.environ.get("AVATAR_LOADTEST_PERSONAS", "default").split(",")]
# Mic-sized pieces: the router buffers them until `audio_end`, as with a real microphone.
CHUNK_S = 0.25
# How often an idle WebSocket user reads its socket (uvicorn pings every 20 s).
KEEPALIVE_S = 2.0


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


def load_clips() -> list[Clip]:
    folder = os.environ.get("AVATAR_LOADTEST_CLIPS")
    if not folder:
        # Run by hand without the runner: make the clips here (espeak, no network).
        from loadtests.run import make_clips

        folder = str(make_clips(Path(os.environ.get("TMPDIR", "/tmp")) / "avatar-loadtest-clips"))
    paths = sorted(Path(folder).glob("*.wav"))
    if not paths:
        raise RuntimeError(f"no question clips (*.wav) in {folder}")
    return [Clip.from_wav(p.name, p.read_bytes()) for p in paths]


CLIPS = load_clips()
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


RECORDER = Recorder(os.environ.get("AVATAR_LOADTEST_RECORDS"))


KEEPERS: set[gevent.Greenlet] = set()


@events.test_stop.add_listener
def _stop_keepers(**_: Any) -> None:
    gevent.killall(list(KEEPERS), block=False)
    KEEPERS.clear()


@events.quitting.add_listener
def _close_records(**_: Any) -> None:
    RECORDER.close()


class TurnRejected(Exception):
    """Overload: HTTP 503 or a 503 `error` event (Serve back-pressure), never a timeout."""

    status = 503


class TurnTimeout(Exception):
    """No `done` within the turn timeout (or the socket went silent that long)."""

    status = None


class TurnFailed(Exception):
    """Any other failure: a 4xx/5xx answer or event, a dropped connection, a cut stream."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def failure(exc: BaseException, where: str) -> Exception:
    """One of the three causes, with a stable message (locust groups failures by message)."""
    if isinstance(exc, TurnRejected | TurnTimeout | TurnFailed):
        return exc
    if isinstance(exc, websocket.WebSocketBadStatusException):
        status = int(getattr(exc, "status_code", 0) or 0)
        if status == 503:
            return TurnRejected(f"503 rejected ({where})")
        return TurnFailed(f"error {status} ({where})", status)
    timed_out = isinstance(exc, websocket.WebSocketTimeoutException | TimeoutError)
    # requests reports a read timeout mid-stream as a ConnectionError wrapping urllib3's.
    timed_out |= isinstance(exc, requests.Timeout) or (
        isinstance(exc, requests.RequestException) and "timed out" in str(exc).lower()
    )
    if timed_out:
        return TurnTimeout(f"timeout after {TURN_TIMEOUT_S:g} s ({where})")
    return TurnFailed(f"connection: {type(exc).__name__} ({where})")


def error_event(status: int, where: str) -> Exception:
    if status == 503:
        return TurnRejected(f"503 rejected ({where})")
    return TurnFailed(f"error {status} ({where})", status)


# What can go wrong on the wire (ValueError: an event that is not JSON).
WIRE_ERRORS = (OSError, websocket.WebSocketException, requests.RequestException, ValueError)


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


_END = ("done", "error")


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

    weight = int(_env_float("AVATAR_LOADTEST_WS_WEIGHT", 3))
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

    def receive(self, trace: Trace, deadline: float, until: tuple[str, ...] = _END) -> None:
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
            self.ws = websocket.create_connection(self.url(), timeout=TURN_TIMEOUT_S)
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

    weight = int(_env_float("AVATAR_LOADTEST_HTTP_WEIGHT", 1))
    kind = "http"

    def on_start(self) -> None:
        super().on_start()
        self.http = requests.Session()
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
                        if line and trace.feed(json.loads(line), len(line)) in _END:
                            break
                    self.session_id = trace.session_id or self.session_id
        except WIRE_ERRORS + (TurnTimeout,) as e:
            exc = failure(e, "turn")
        if exc is None and trace.error is not None:
            exc = error_event(trace.error[0], "turn")
        self.finish(trace, exc)


_SHAPE = shape_from_env()
if _SHAPE is not None:

    class AvatarLoadShape(LoadTestShape):
        """The `loadtests.shapes` shape named by $AVATAR_LOADTEST_SHAPE."""

        shape = _SHAPE

        def tick(self):
            return self.shape.tick(self.get_run_time())
