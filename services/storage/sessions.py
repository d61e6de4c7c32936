"""Conversation state per session, kept outside the router replicas.

A router replica can die or be replaced at any time; the next request for a session may land
on another replica. So a session (its persona, its history) lives in the database: a SQLite file
by default (one machine), PostgreSQL when a URL is configured (a cluster).

A session's history is not stored separately: it is read from the audit log (`turns`), the
user's words and the avatar's reply of each of its turns that finished "ok". Every turn is
logged there (`TranscriptStore.begin_turn`/`finish_turn`, by persona and plain sessions alike),
so `append` is only needed for exchanges that did not run as a logged turn.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from services.core.types import ChatMessage
from services.storage.engine import Database
from services.storage.schema import sessions, turns
from services.storage.transcripts import TranscriptStore, check_text, record


class UnknownSessionError(KeyError):
    """No session with that id (never created, or expired)."""

    def __str__(self) -> str:
        return f"unknown session {self.args[0]!r}"


@dataclass(frozen=True)
class Session:
    """One conversation. `tenant`/`owner_key_id`: the API key that opened it (None: open mode)."""

    id: str
    persona_id: str | None
    created_at: float
    updated_at: float
    tenant: str | None = None
    owner_key_id: str | None = None


def _session_dict(session: Session) -> dict[str, Any]:
    data = asdict(session)
    for name in ("created_at", "updated_at"):
        data[name] = datetime.fromtimestamp(data[name], UTC).isoformat()
    return data


def _exchanges(messages: Sequence[ChatMessage]) -> list[tuple[str, str | None]]:
    """(user text, reply or None) per user message; a reply must follow its user message."""
    exchanges: list[tuple[str, str | None]] = []
    for message in messages:
        if message.role == "user":
            exchanges.append((message.content, None))
        elif message.role == "assistant" and exchanges and exchanges[-1][1] is None:
            exchanges[-1] = (exchanges[-1][0], message.content)
        else:
            # History is stored as turns: a turn starts with what the user said.
            raise ValueError(
                f"cannot append a {message.role!r} message here: history is user messages, "
                "each optionally followed by the assistant's reply"
            )
    return exchanges


class SessionStore:
    """Sessions, and their history read from the audit log, in SQLite or PostgreSQL.

    Args:
        db: the shared `Database`, or a URL / SQLite path to open one this store owns.
        ttl_s: sessions idle for longer are treated as unknown and purged.
        transcripts: the audit log over the same database (default: a new one over `db`).

    Attributes:
        transcripts: where every turn of a session is logged; its history is read from there.
    """

    def __init__(
        self,
        db: Database | str | Path,
        *,
        ttl_s: float = 3600,
        transcripts: TranscriptStore | None = None,
    ) -> None:
        self.ttl_s = ttl_s
        self._owns_db = not isinstance(db, Database)
        self.db = Database(db) if self._owns_db else db
        if transcripts is not None and transcripts.db is not self.db:
            # History is read from this database: turns logged elsewhere would never show.
            raise ValueError("transcripts must be a TranscriptStore over the same Database")
        self.transcripts = transcripts or TranscriptStore(self.db)

    def create(
        self,
        persona_id: str | None = None,
        *,
        tenant: str | None = None,
        owner_key_id: str | None = None,
    ) -> Session:
        """A new session, owned by the API key `owner_key_id` of `tenant` (None: nobody)."""
        now = time.time()
        session = Session(uuid.uuid4().hex, persona_id, now, now, tenant, owner_key_id)
        with self.db.write() as conn:
            conn.execute(
                insert(sessions).values(
                    id=session.id,
                    persona_id=persona_id,
                    created_at=now,
                    updated_at=now,
                    tenant=tenant,
                    owner_key_id=owner_key_id,
                )
            )
        return session

    def _get(self, conn: Connection, session_id: str) -> Session:
        row = conn.execute(select(sessions).where(sessions.c.id == session_id)).first()
        if row is None or time.time() - row.updated_at > self.ttl_s:
            raise UnknownSessionError(session_id)
        return Session(
            row.id, row.persona_id, row.created_at, row.updated_at, row.tenant, row.owner_key_id
        )

    def get(self, session_id: str) -> Session:
        """The session; UnknownSessionError if it never existed or has been idle past the TTL."""
        with self.db.read() as conn:
            return self._get(conn, session_id)

    def history(self, session_id: str, limit: int = 50) -> list[ChatMessage]:
        """The last `limit` messages of the session, oldest first: the user's words and the
        avatar's reply of each turn that finished "ok" or "interrupted" (then the reply is
        what the user heard before cutting it off).

        Failed, cancelled and still-running turns are left out: the LLM is shown the exchanges
        that happened, never a question without its answer (`TranscriptStore.history` keeps
        those, for review).
        """
        if limit <= 0:
            return []
        query = (
            select(turns.c.user_text, turns.c.reply)
            .where(turns.c.session_id == session_id, turns.c.status.in_(("ok", "interrupted")))
            .order_by(turns.c.seq.desc())
            .limit(limit)  # each turn is one or two messages: `limit` turns are enough
        )
        with self.db.read() as conn:
            rows = conn.execute(query).all()
        messages: list[ChatMessage] = []
        for user_text, reply in reversed(rows):
            messages.append(ChatMessage("user", user_text))
            if reply is not None:
                messages.append(ChatMessage("assistant", reply))
        return messages[-limit:]

    def append(self, session_id: str, *messages: ChatMessage) -> None:
        """Add exchanges to a session's history (and keep the session alive).

        Each user message becomes one finished turn of the audit log, with the assistant
        message after it (if any) as its reply. Turns run through `transcripts` are already
        history: appending them too would show them twice.

        Raises:
            UnknownSessionError: no such session, or it expired.
            ValueError: a message that is neither a user message nor the reply to one.
        """
        exchanges = _exchanges(messages)
        stamp = datetime.now(UTC)
        with self.db.write() as conn:
            session = self._get(conn, session_id)
            for user_text, reply in exchanges:
                conn.execute(
                    insert(turns).values(
                        turn_id=uuid.uuid4().hex,
                        persona_id=session.persona_id,
                        session_id=session_id,
                        user_text=check_text("user_text", user_text),
                        reply=None if reply is None else check_text("reply", reply),
                        sources=[],
                        timings={},
                        status="ok",
                        started_at=stamp,
                        finished_at=stamp,
                    )
                )
            touch = update(sessions).where(sessions.c.id == session_id)
            conn.execute(touch.values(updated_at=time.time()))

    def stored(self, session_id: str) -> Session | None:
        """The session's row even if idle past the TTL (not yet purged), else None."""
        with self.db.read() as conn:
            row = conn.execute(select(sessions).where(sessions.c.id == session_id)).first()
        if row is None:
            return None
        return Session(
            row.id, row.persona_id, row.created_at, row.updated_at, row.tenant, row.owner_key_id
        )

    def export(self, session_id: str) -> dict[str, Any]:
        """Everything stored about a session, for a data-subject request: the session (None
        once purged) and every turn of it, with citations, timings, status and times.

        Raises:
            UnknownSessionError: neither the session nor any turn of it is stored.
        """
        session = self.stored(session_id)
        with self.db.read() as conn:
            rows = conn.execute(
                select(turns).where(turns.c.session_id == session_id).order_by(turns.c.seq)
            ).all()
        if session is None and not rows:
            raise UnknownSessionError(session_id)
        return {
            "session_id": session_id,
            "exported_at": datetime.now(UTC).isoformat(),
            "session": None if session is None else _session_dict(session),
            "turns": [record(row).to_dict() for row in rows],
        }

    def count(self) -> int:
        """Sessions active within the TTL."""
        cutoff = time.time() - self.ttl_s
        query = select(func.count()).select_from(sessions).where(sessions.c.updated_at >= cutoff)
        with self.db.read() as conn:
            return conn.execute(query).scalar_one()

    def purge_expired(self) -> int:
        """Delete sessions idle past the TTL; returns how many. Their turns stay: they are the
        audit log, which outlives the sessions."""
        cutoff = time.time() - self.ttl_s
        with self.db.write() as conn:
            return conn.execute(delete(sessions).where(sessions.c.updated_at < cutoff)).rowcount

    def close(self) -> None:
        """Close the database if this store opened it; a shared one is closed by its owner."""
        if self._owns_db:
            self.db.close()
