"""The audit log of every turn - persona or plain chat - in the `turns` table.

The user's words are written *before* the turn is processed (`begin_turn`, committed at once),
so a replica that dies mid-turn leaves a row with status "started" rather than losing what was
said; `finish_turn` later adds the reply, grounding sources, timings and final status. Rows are
ordered by the database's autoincrement `seq` (wall clocks of replicas disagree; the database's
sequence does not).

The log is append-only (`services/storage/guards.py`): a finished turn never changes, and rows
leave only under a recorded erasure (`services/storage/audit.py`). A turn whose replica died is
closed by `fail_stale_turns` (status "error", reason `ABANDONED`), run by every router replica.

The same rows are the sessions' history (`SessionStore.history`, `TranscriptStore.history`), so
a conversation is stored once. One class for SQLite and PostgreSQL: SQLAlchemy Core writes the
SQL, its pool gives each thread its own connection and replaces dropped ones.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.exc import IntegrityError

from services.core.types import ChatMessage, Source
from services.storage.audit import AuditLog, PersonaRevokedError
from services.storage.engine import Database
from services.storage.schema import sessions, turns

log = logging.getLogger(__name__)

STARTED = "started"
# "interrupted": the user barged in; the reply holds only what was played before the cut.
FINISH_STATUSES = ("ok", "error", "cancelled", "timeout", "interrupted")
ABANDONED = "abandoned: no replica finished this turn"
_MAX_TEXT = 20_000  # a turn is seconds of speech; anything longer is a client bug or abuse


class TurnFinishedError(ValueError):
    """`finish_turn` was given a turn that is already finished: the audit log keeps the first
    outcome (a turn finished twice is a bug of its caller)."""


class UnknownTurnError(KeyError):
    """`finish_turn` (or `get`) was given a turn id the store has never seen."""

    def __str__(self) -> str:
        return f"unknown turn id {self.args[0]!r}"


@dataclass(frozen=True)
class TurnRecord:
    """One row of the audit log.

    Attributes:
        seq: Database order of `begin_turn` calls.
        turn_id: Id returned by `begin_turn`.
        persona_id: Persona that answered; None for a plain chat turn.
        session_id: Conversation it belongs to.
        user_text: What the user said (written before processing).
        reply: What the avatar said, None until finished.
        kind: Plan kind ("answer", "refusal", ...), None until finished or for plain chat.
        sources: Grounding statements as dicts (id, source, title, text, score).
        timings: Stage timings in seconds or ms, as the caller measured them.
        status: "started" until finished, then one of FINISH_STATUSES.
        started_at: When `begin_turn` ran (UTC).
        finished_at: When `finish_turn` ran (UTC), or None.
        reason: Why it ended so, when known (`ABANDONED` for a turn no replica finished).
    """

    seq: int
    turn_id: str
    persona_id: str | None
    session_id: str
    user_text: str
    reply: str | None
    kind: str | None
    sources: tuple[dict[str, Any], ...]
    timings: dict[str, float]
    status: str
    started_at: datetime
    finished_at: datetime | None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy (times as ISO 8601), as a session export lists it."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["sources"] = list(self.sources)
        data["started_at"] = self.started_at.isoformat()
        data["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        return data


def check_text(name: str, value: str) -> str:
    """`value`, cut to the longest text a turn stores; a non-string is a TypeError."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string")
    return value[:_MAX_TEXT]


def _utc(value: datetime | None) -> datetime | None:
    # SQLite has no time zones: SQLAlchemy hands its DATETIMEs back naive. They were written
    # in UTC, so say so; PostgreSQL's TIMESTAMPTZ comes back aware already.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def record(row: Row) -> TurnRecord:
    """The `TurnRecord` of a `turns` row."""
    return TurnRecord(
        seq=row.seq,
        turn_id=row.turn_id,
        persona_id=row.persona_id,
        session_id=row.session_id,
        user_text=row.user_text,
        reply=row.reply,
        kind=row.kind,
        sources=tuple(row.sources),
        timings=dict(row.timings),
        status=row.status,
        started_at=_utc(row.started_at),
        finished_at=_utc(row.finished_at),
        reason=row.reason,
    )


class TranscriptStore:
    """Durable per-turn audit log; see the module docstring for the write order.

    Thread-safe: each call checks a connection out of the database's pool.

    Args:
        db: the shared `Database`, or a URL / SQLite path to open one that this store owns
            (and closes on `close()`).
    """

    def __init__(self, db: Database | str | Path) -> None:
        self._owns_db = not isinstance(db, Database)
        self.db = Database(db) if self._owns_db else db

    def begin_turn(
        self,
        persona_id: str | None,
        session_id: str,
        user_text: str,
        *,
        turn_id: str | None = None,
    ) -> str:
        """Record the user's turn (committed before returning) and return its turn id.

        `persona_id` None is a plain chat turn. The session, if stored, counts as active now.

        Raises:
            PersonaRevokedError: the persona's consent was revoked (the database refuses it).
        """
        turn_id = turn_id or uuid.uuid4().hex
        row = {
            "turn_id": turn_id,
            "persona_id": persona_id,
            "session_id": session_id,
            "user_text": check_text("user_text", user_text),
            "sources": [],
            "timings": {},
            "status": STARTED,
            "started_at": datetime.now(UTC),
        }
        try:
            self._insert(row, session_id)
        except IntegrityError:
            revocation = persona_id and AuditLog(self.db).revocation(persona_id)
            if revocation:
                raise PersonaRevokedError(revocation) from None
            raise
        return turn_id

    def _insert(self, row: dict[str, Any], session_id: str) -> None:
        with self.db.write() as conn:
            conn.execute(insert(turns).values(row))
            # A turn keeps its session alive (the idle TTL counts from here), in the same
            # transaction, so no caller can log a turn and forget to.
            touch = update(sessions).where(sessions.c.id == session_id)
            conn.execute(touch.values(updated_at=time.time()))

    def finish_turn(
        self,
        turn_id: str,
        reply: str,
        sources: Sequence[Source | Mapping[str, Any]] = (),
        timings: Mapping[str, float] | None = None,
        status: str = "ok",
        *,
        kind: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Complete a turn (once: a finished turn is final).

        Raises:
            UnknownTurnError: an id `begin_turn` never returned (or erased since).
            TurnFinishedError: the turn is finished already; its first outcome stays.
            ValueError: a status not in FINISH_STATUSES.
        """
        if status not in FINISH_STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(FINISH_STATUSES)}")
        values = {
            "reply": check_text("reply", reply),
            "kind": kind,
            "sources": [s.to_dict() if isinstance(s, Source) else dict(s) for s in sources],
            "timings": dict(timings or {}),
            "status": status,
            "finished_at": datetime.now(UTC),
            "reason": None if reason is None else check_text("reason", reason),
        }
        started = (turns.c.turn_id == turn_id) & (turns.c.status == STARTED)
        with self.db.write() as conn:
            if conn.execute(update(turns).where(started).values(values)).rowcount:
                return
            done = conn.execute(
                select(turns.c.status, turns.c.reason).where(turns.c.turn_id == turn_id)
            ).first()
        if done is None:
            raise UnknownTurnError(turn_id)
        if done.reason == ABANDONED:
            # The turn outlived storage.stale_turn_s and was closed under its live replica: keep
            # the log as it is, and let the turn's client get its answer anyway.
            log.warning("turn %s finished after it was closed as abandoned: not logged", turn_id)
            return
        raise TurnFinishedError(f"turn {turn_id!r} is already finished ({done.status})")

    def fail_stale_turns(self, older_than_s: float) -> int:
        """Mark turns still "started" that began more than `older_than_s` ago as "error" with
        reason `ABANDONED`; returns how many.

        Their replica died mid-turn (a finished turn is always closed, even when its client went
        away), so nothing else will finish them. `older_than_s` must exceed the longest turn, or
        a slow live turn is closed under its replica (whose `finish_turn` then only logs a
        warning: the row stays "error"). Every router replica runs this; the UPDATE is atomic,
        so two at once close each turn once.
        """
        if not older_than_s > 0:
            raise ValueError("older_than_s must be positive")
        now = datetime.now(UTC)
        stale = (turns.c.status == STARTED) & (
            turns.c.started_at < now - timedelta(seconds=older_than_s)
        )
        values = {"status": "error", "reason": ABANDONED, "finished_at": now}
        with self.db.write() as conn:
            count = conn.execute(update(turns).where(stale).values(values)).rowcount
        if count:
            log.warning(
                "closed %d abandoned turn(s) older than %.0f s as error", count, older_than_s
            )
        return count

    def get(self, turn_id: str) -> TurnRecord:
        """One turn by id; UnknownTurnError if there is none."""
        with self.db.read() as conn:
            row = conn.execute(select(turns).where(turns.c.turn_id == turn_id)).first()
        if row is None:
            raise UnknownTurnError(turn_id)
        return record(row)

    def turns(
        self,
        *,
        session_id: str | None = None,
        persona_id: str | None = None,
        status: str | None = None,
        finished: bool | None = None,
        limit: int = 100,
    ) -> list[TurnRecord]:
        """The most recent `limit` matching turns, oldest first. `finished` True/False keeps only
        finished / still-"started" turns."""
        query = select(turns)
        for column, value in (
            (turns.c.session_id, session_id),
            (turns.c.persona_id, persona_id),
            (turns.c.status, status),
        ):
            if value is not None:
                query = query.where(column == value)
        if finished is not None:
            started = turns.c.status == STARTED
            query = query.where(~started if finished else started)
        query = query.order_by(turns.c.seq.desc()).limit(int(limit))
        with self.db.read() as conn:
            rows = conn.execute(query).all()
        return [record(row) for row in reversed(rows)]

    def history(
        self, session_id: str, limit: int = 10, *, include_unfinished: bool = False
    ) -> list[ChatMessage]:
        """The session's last `limit` turns as chat messages (user, then assistant if it
        replied), oldest first: what was said, for review.

        Unlike `SessionStore.history` (what the LLM is shown), a turn that failed keeps the
        user's words. Turns still "started" are left out by default: one is usually the turn
        being processed right now, and a crashed one has no reply to pair.
        """
        messages: list[ChatMessage] = []
        finished = None if include_unfinished else True
        for record in self.turns(session_id=session_id, finished=finished, limit=limit):
            messages.append(ChatMessage("user", record.user_text))
            if record.reply and record.status in ("ok", "interrupted"):
                messages.append(ChatMessage("assistant", record.reply))
        return messages

    def close(self) -> None:
        """Close the database if this store opened it; a shared one is closed by its owner."""
        if self._owns_db:
            self.db.close()

    def __enter__(self) -> TranscriptStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
