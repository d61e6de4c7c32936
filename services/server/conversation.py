"""Sessions + turns: what the router does per request, without any Ray in it.

A `Conversation` binds the turn orchestrator to a `Stages` implementation (Ray handles in the
router, local backends in tests), a `SessionStore` (so a session's history survives the router
replica that served its last turn) and, optionally, the personas: a session with a persona is
planned, guarded and logged by it.

Every turn, persona or plain chat, is written to the audit log (`SessionStore.transcripts`)
before it is processed and finished after it; the session's history is read back from there, so
a conversation is stored once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from services.core.config import TurnSettings
from services.core.telemetry import Telemetry
from services.core.types import ChatMessage, ReplyChunk
from services.persona.personas import PLAIN_DISCLOSURE
from services.persona.revocation import PersonaRevokedError
from services.server.admission import Admission, Ticket
from services.server.auth import ANONYMOUS, Principal
from services.server.events import error_json, event_json
from services.server.limits import KeyLimiter, error_event
from services.server.requests import ApiError, TurnInput
from services.storage.sessions import Session, SessionStore, UnknownSessionError
from services.storage.transcripts import TranscriptStore
from services.turn.orchestrator import (
    Stages,
    TurnInputError,
    TurnPlan,
    TurnResult,
    default_plan,
    run_turn,
    speak,
)


@dataclass
class Interruption:
    """A live turn's ending. Its audit row is finished when playback ends (`settle`), not
    when the pipeline is done producing, which is seconds earlier: if the user cuts the reply
    off in between, the row and the history keep only what was heard (`spoken`), with status
    `interrupted`. The socket fills the fields before it cancels the turn."""

    interrupted: bool = False
    spoken: str = ""
    played_s: float = 0.0
    discarded: bool = False  # a reply started on a pause and dropped: the user went on
    _held: tuple[Callable[..., None], str, dict[str, Any]] | None = None

    def hold(self, finish: Callable[..., None], reply: str, timings: dict[str, Any]) -> None:
        self._held = (finish, reply, timings)

    def settle(self) -> None:
        """Finish the held row: played to the end, or cut off (idempotent)."""
        if self._held is None:
            return
        finish, reply, timings = self._held
        self._held = None
        if self.discarded:
            finish(reply, timings, status="cancelled")
        elif self.interrupted:
            finish(self.spoken, {**timings, "played_s": self.played_s}, status="interrupted")
        else:
            finish(reply, timings)


class PlainTurns:
    """Plans and logs the turns of one session without a persona, like `PersonaTurns` does for
    a persona: the default plan, and an audit-log row (persona_id None) that is also the
    session's history.
    """

    def __init__(self, turn: TurnSettings, store: TranscriptStore, session_id: str) -> None:
        self.turn, self.store, self.session_id = turn, store, session_id
        self.turn_id: str | None = None

    def __call__(self, user_text: str, history: Sequence[ChatMessage]) -> TurnPlan:
        self.turn_id = self.store.begin_turn(None, self.session_id, user_text)
        return default_plan(self.turn, user_text, history)

    def finish(self, reply: str, timings: dict[str, Any], status: str = "ok") -> None:
        if self.turn_id is not None:
            self.store.finish_turn(self.turn_id, reply, (), timings, status)
            self.turn_id = None


class Conversation:
    """Runs turns for sessions.

    Args:
        stages: the four stages.
        turn: turn bounds.
        sessions: where session state lives.
        fps: the render stage's frame rate (told to clients in the `session` event).
        max_sessions: open sessions at most (more is a 503).
        telemetry: where turn metrics go (default: nowhere).
        personas: `services.persona.personas.Personas`, or None for plain chat only.
        limiter: each API key's limits (`services.server.limits`; None: none).
        admission: turns in flight vs capacity (`services.server.admission`; None: unbounded).
    """

    def __init__(
        self,
        stages: Stages,
        turn: TurnSettings,
        sessions: SessionStore,
        *,
        fps: float,
        max_sessions: int = 1000,
        telemetry: Telemetry | None = None,
        personas=None,
        limiter: KeyLimiter | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.stages, self.turn, self.sessions = stages, turn, sessions
        self.limiter, self.admission = limiter, admission or Admission(None)
        self.fps, self.max_sessions = fps, max_sessions
        self.telemetry = telemetry or Telemetry()
        self.personas = personas

    def disclosure(self, session: Session) -> dict[str, Any]:
        if self.personas is None or session.persona_id is None:
            return PLAIN_DISCLOSURE
        return self.personas.disclosure(session.persona_id)

    def session_event(self, session: Session) -> dict[str, Any]:
        return {
            "type": "session",
            "session_id": session.id,
            "persona_id": session.persona_id,
            "fps": self.fps,
            "disclosure": self.disclosure(session),
        }

    def open_session(
        self, persona_id: str | None = None, principal: Principal = ANONYMOUS
    ) -> Session:
        """A new session of `principal` (403 if its key may not talk to the persona)."""
        if persona_id is not None:
            principal.check_persona(persona_id)  # before resolving: a 404 lists the personas
        persona_id = self._persona(persona_id)
        principal.check_persona(persona_id)  # the resolved one: the default persona counts
        if self.limiter is not None:
            self.limiter.check_session(principal.key_id, principal.tenant)
        if self.sessions.count() >= self.max_sessions:
            self.sessions.purge_expired()
            if self.sessions.count() >= self.max_sessions:
                raise ApiError(503, f"too many open sessions (limit {self.max_sessions})")
        return self.sessions.create(persona_id, **principal.owner())

    def _persona(self, persona_id: str | None) -> str | None:
        if self.personas is None:
            if persona_id is not None:
                raise ApiError(422, "this cluster serves no personas (personas are disabled)")
            return None
        try:
            return self.personas.resolve(persona_id)
        except KeyError as exc:
            raise ApiError(404, str(exc).strip("'\"")) from None
        except PersonaRevokedError as exc:
            raise ApiError(410, str(exc)) from None

    def session(self, session_id: str, principal: Principal = ANONYMOUS) -> Session:
        """The session; 404 if unknown, expired or another key's."""
        try:
            session = self.sessions.get(session_id)
        except UnknownSessionError as exc:
            raise ApiError(404, str(exc)) from None
        principal.check_owner(session)
        return session

    def export(self, session_id: str, principal: Principal = ANONYMOUS) -> dict[str, Any]:
        """Everything stored about a session, for a data-subject request: admin keys only (403),
        404 if unknown or another tenant's. Once the idle session itself is purged its owner is
        unknown: only open mode (or `avatar persona export`, the operator's) exports its turns."""
        if not principal.admin:
            raise ApiError(403, "exporting a session needs an admin API key")
        session = self.sessions.stored(session_id)
        if session is not None:
            principal.check_owner(session)
        elif not principal.anonymous:
            raise ApiError(404, f"unknown session {session_id!r}")
        try:
            return self.sessions.export(session_id)
        except UnknownSessionError as exc:
            raise ApiError(404, str(exc)) from None

    def resolve(self, request: TurnInput, principal: Principal = ANONYMOUS) -> Session:
        """The session a turn belongs to: the named one (404 if unknown) or a new one."""
        if request.session_id:
            session = self.session(request.session_id, principal)
            if request.persona_id and request.persona_id != session.persona_id:
                raise ApiError(409, f"session {session.id} talks to {session.persona_id!r}")
            return session
        return self.open_session(request.persona_id, principal)

    def _turns(self, session: Session):
        """The planner of the session's next turn, which also logs it (`finish` after it)."""
        if self.personas is None or session.persona_id is None:
            return PlainTurns(self.turn, self.sessions.transcripts, session.id)
        # Logged where the session's history is read from, whatever store `personas` holds.
        try:
            return self.personas.turns(session.persona_id, session.id, self.sessions.transcripts)
        except PersonaRevokedError as exc:  # revoked since the session opened
            raise ApiError(410, str(exc)) from None

    async def greeting_events(
        self, session: Session, *, wire: Callable[[Any], Any] = event_json, video: str = "jpeg"
    ) -> AsyncIterator[Any]:
        """The session-start turn of a persona: it introduces itself as an AI (spoken too)."""
        if self.personas is None or session.persona_id is None:
            return
        try:  # a greeting runs TTS and render like a turn: it needs a slot too
            turns = self._turns(session)
            ticket = self.admission.acquire()
        except ApiError as exc:
            yield error_event(exc)
            return
        with ticket:
            async for event in speak(self.stages, self.turn, turns.greeting(), video=video):
                yield wire(event)

    def admit(
        self,
        request: TurnInput,
        key_id: str | None = None,
        tenant: str | None = None,
        *,
        charge: bool = True,
    ) -> Ticket:
        """Before a turn starts: 429 (RetryLater) past the key's limits, 503 when the stages are
        at capacity; else the turn's slot, to release when it ends. Charged only if admitted,
        and only if `charge` (a speculative turn is charged by `charge_turn` if it is kept)."""
        audio_s = request.audio.duration_s if request.audio is not None else 0.0
        if self.limiter is not None:
            self.limiter.check_turn(key_id, tenant, audio_s)
        ticket = self.admission.acquire()
        if charge:
            self.charge_turn(key_id, tenant, audio_s)
        return ticket

    def charge_turn(self, key_id: str | None, tenant: str | None, audio_s: float = 0.0) -> None:
        """Count one turn against the key's limits."""
        if self.limiter is not None:
            self.limiter.charge_turn(key_id, tenant, audio_s)

    async def turn_events(
        self,
        session: Session,
        request: TurnInput,
        *,
        ticket: Ticket | None = None,
        charge: bool = True,
        **options,
    ) -> AsyncIterator[Any]:
        """`_turn_events` of an admitted turn: `ticket` from `admit` (the HTTP router admits
        before it answers), or admitted here by the session's key (a refusal is the only
        event: an `error` with status 429/503 and `retry_after_s`). The slot is released when
        the stream ends, however it ends."""
        if ticket is None:
            try:
                ticket = self.admit(request, session.owner_key_id, session.tenant, charge=charge)
            except ApiError as exc:
                yield error_event(exc)
                return
        with ticket:
            async with contextlib.aclosing(self._turn_events(session, request, **options)) as ev:
                async for event in ev:
                    yield event

    async def _turn_events(
        self,
        session: Session,
        request: TurnInput,
        *,
        wire: Callable[[Any], Any] = event_json,
        cut: Interruption | None = None,
        video: str = "jpeg",
    ) -> AsyncIterator[Any]:
        """Stream one turn as wire events; errors become a final `error` event.

        `wire` turns pipeline objects into what is yielded (JSON events by default; a live
        socket takes the objects and sends media as binary). A live socket that cancels the turn
        (barge-in) first fills `cut` with what the user heard: the audit log and the history
        then keep only that, with status `interrupted`.
        """
        history = self.sessions.history(session.id, limit=2 * self.turn.history_turns)
        reply: list[str] = []
        persona = session.persona_id or "default"
        try:
            turns = self._turns(session)
        except ApiError as exc:  # 410: the persona's consent was revoked
            yield error_event(exc)
            return
        try:
            async for event in run_turn(
                self.stages,
                self.turn,
                audio=request.audio,
                text=request.text,
                transcript=request.transcript,
                video=video,
                history=history,
                planner=turns,
            ):
                if isinstance(event, ReplyChunk):
                    reply.append(event.text)
                elif isinstance(event, TurnResult):
                    event.metadata.setdefault("disclosure", PLAIN_DISCLOSURE)
                    self.telemetry.turn_completed(persona, event.timings, self.fps)
                    if cut is None:
                        turns.finish(event.reply, event.timings)  # now it is history too
                    else:
                        cut.hold(turns.finish, event.reply, event.timings)
                yield wire(event)
        except TurnInputError as exc:
            self.telemetry.turn_failed(persona, rejected=False)
            yield error_json(422, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - any stage failure ends the stream cleanly
            status = _status_of(exc)
            self.telemetry.turn_failed(persona, rejected=status == 503)
            turns.finish(" ".join(reply), {}, status="error")
            yield error_json(status, f"{type(exc).__name__}: {exc}".splitlines()[0])
        except BaseException:
            if cut is not None and cut._held is not None:
                cut.settle()  # produced, then cut off (or the client left) while playing
            elif cut is not None and cut.interrupted:
                turns.finish(cut.spoken, {"played_s": cut.played_s}, status="interrupted")
            else:
                # The client went away mid-turn (the stream was closed or cancelled): say so
                # in the log rather than leave the turn "started" as if a replica had died.
                turns.finish(" ".join(reply), {}, status="cancelled")
            raise


def _status_of(exc: Exception) -> int:
    """503 for overload (Serve's back-pressure), 410 for a revoked persona, 500 otherwise."""
    if isinstance(exc, PersonaRevokedError):  # revoked within the replica's cache window
        return 410
    name = type(exc).__name__
    if name in {"BackPressureError", "DeploymentUnavailableError"}:
        return 503
    return 500
