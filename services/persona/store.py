"""Transcript / audit log of every turn, in SQLite (default) or PostgreSQL.

The user's words are written *before* the turn is processed (`begin_turn`, committed at once),
so a replica that dies mid-turn leaves a row with status "started" rather than losing what was
said; `finish_turn` later adds the reply, grounding sources, timings and final status. One table,
`persona_turns`, ordered by an autoincrement `seq` (wall clocks of replicas disagree; the database's
sequence does not).

`open_store(dsn)` picks the backend: `postgresql://...` (psycopg 3, imported only then) or a
SQLite path / `sqlite:///path`. Both stores are thread-safe (one connection behind a lock:
turns are a few small writes, not a hot path worth a pool).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.persona.corpus import Source
from services.types import ChatMessage

STARTED = "started"
FINISH_STATUSES = ("ok", "error", "cancelled", "timeout")
_MAX_TEXT = 20_000  # a turn is seconds of speech; anything longer is a client bug or abuse


class TranscriptStoreConfig(BaseModel):
    """Where transcripts go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dsn: str | None = Field(
        default=None,
        max_length=2000,
        description="postgresql://user@host:port/db for PostgreSQL; null = SQLite at sqlite_path.",
    )
    sqlite_path: str = Field(
        default="var/transcripts.sqlite3",
        min_length=1,
        max_length=1000,
        description="SQLite file used when no DSN is set; its folder is created.",
    )


class UnknownTurnError(KeyError):
    """`finish_turn` was given a turn id the store has never seen."""

    def __str__(self) -> str:
        return f"unknown turn id {self.args[0]!r}"


@dataclass(frozen=True)
class TurnRecord:
    """One row of the audit log.

    Attributes:
        seq: Database order of `begin_turn` calls.
        turn_id: Id returned by `begin_turn`.
        persona_id: Persona that answered.
        session_id: Conversation it belongs to.
        user_text: What the user said (written before processing).
        reply: What the avatar said, None until finished.
        kind: Plan kind ("answer", "refusal", ...), None until finished.
        sources: Grounding statements as dicts (id, source, text, score).
        timings: Stage timings in seconds or ms, as the caller measured them.
        status: "started" until finished, then one of FINISH_STATUSES.
        started_at: When `begin_turn` ran (UTC).
        finished_at: When `finish_turn` ran (UTC), or None.
    """

    seq: int
    turn_id: str
    persona_id: str
    session_id: str
    user_text: str
    reply: str | None
    kind: str | None
    sources: tuple[dict[str, Any], ...]
    timings: dict[str, float]
    status: str
    started_at: datetime
    finished_at: datetime | None


def _sources_json(sources: Sequence[Source | Mapping[str, Any]]) -> str:
    return json.dumps(
        [s.to_dict() if isinstance(s, Source) else dict(s) for s in sources], ensure_ascii=False
    )


def _check_text(name: str, value: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string")
    return value[:_MAX_TEXT]


class TranscriptStore(ABC):
    """Durable per-turn audit log; see the module docstring for the write order."""

    @abstractmethod
    def begin_turn(
        self, persona_id: str, session_id: str, user_text: str, *, turn_id: str | None = None
    ) -> str:
        """Record the user's turn (committed before returning) and return its turn id."""

    @abstractmethod
    def finish_turn(
        self,
        turn_id: str,
        reply: str,
        sources: Sequence[Source | Mapping[str, Any]] = (),
        timings: Mapping[str, float] | None = None,
        status: str = "ok",
        *,
        kind: str | None = None,
    ) -> None:
        """Complete a turn. Raises UnknownTurnError for an id `begin_turn` never returned."""

    @abstractmethod
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

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def history(
        self, session_id: str, limit: int = 10, *, include_unfinished: bool = False
    ) -> list[ChatMessage]:
        """The session's last `limit` turns as chat messages (user, then assistant if it
        replied), oldest first: the conversation state a replica needs to resume a session.

        Turns still "started" are left out by default: one is usually the turn being processed
        right now (its text is the new user message), and a crashed one has no reply to pair.
        """
        messages: list[ChatMessage] = []
        finished = None if include_unfinished else True
        for record in self.turns(session_id=session_id, finished=finished, limit=limit):
            messages.append(ChatMessage("user", record.user_text))
            if record.reply and record.status == "ok":
                messages.append(ChatMessage("assistant", record.reply))
        return messages

    @staticmethod
    def _validate_finish(status: str) -> None:
        if status not in FINISH_STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(FINISH_STATUSES)}")

    def __enter__(self) -> TranscriptStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_COLUMNS = (
    "seq, turn_id, persona_id, session_id, user_text, reply, kind, sources, timings, status, "
    "started_at, finished_at"
)


def _select(where: list[str], placeholder: str) -> str:
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    return (
        f"SELECT {_COLUMNS} FROM (SELECT {_COLUMNS} FROM persona_turns {clause} "
        f"ORDER BY seq DESC LIMIT {placeholder}) AS recent ORDER BY seq"
    )


def _filters(
    session_id: str | None,
    persona_id: str | None,
    status: str | None,
    finished: bool | None,
    placeholder: str,
) -> tuple[list[str], list[Any]]:
    where, params = [], []
    pairs = (("session_id", session_id), ("persona_id", persona_id), ("status", status))
    for column, value in pairs:
        if value is not None:
            where.append(f"{column} = {placeholder}")
            params.append(value)
    if finished is not None:
        where.append(f"status {'<>' if finished else '='} {placeholder}")
        params.append(STARTED)
    return where, params


class SQLiteTranscriptStore(TranscriptStore):
    """SQLite file in WAL mode: replicas on one host can share it.

    Args:
        path: Database file (its folder is created), or ":memory:".
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            self.path, timeout=30.0, check_same_thread=False, isolation_level=None
        )
        # WAL: readers never block the writer; synchronous=NORMAL in WAL survives a process
        # crash (the failure mode that matters: a replica dying mid-turn).
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS persona_turns (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                turn_id TEXT NOT NULL UNIQUE,
                persona_id TEXT NOT NULL,
                session_id TEXT NOT NULL,
                user_text TEXT NOT NULL,
                reply TEXT,
                kind TEXT,
                sources TEXT NOT NULL DEFAULT '[]',
                timings TEXT NOT NULL DEFAULT '{}',
                status TEXT NOT NULL,
                started_at REAL NOT NULL,
                finished_at REAL
            );
            CREATE INDEX IF NOT EXISTS persona_turns_session ON persona_turns (session_id, seq);
            CREATE INDEX IF NOT EXISTS persona_turns_persona ON persona_turns (persona_id, seq);
            """
        )

    def begin_turn(
        self, persona_id: str, session_id: str, user_text: str, *, turn_id: str | None = None
    ) -> str:
        turn_id = turn_id or uuid.uuid4().hex
        with self._lock:
            self._conn.execute(
                "INSERT INTO persona_turns (turn_id, persona_id, session_id, user_text, status, "
                "started_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    turn_id,
                    persona_id,
                    session_id,
                    _check_text("user_text", user_text),
                    STARTED,
                    time.time(),
                ),
            )
        return turn_id

    def finish_turn(
        self,
        turn_id: str,
        reply: str,
        sources: Sequence[Source | Mapping[str, Any]] = (),
        timings: Mapping[str, float] | None = None,
        status: str = "ok",
        *,
        kind: str | None = None,
    ) -> None:
        self._validate_finish(status)
        with self._lock:
            cursor = self._conn.execute(
                "UPDATE persona_turns SET reply = ?, kind = ?, sources = ?, timings = ?, "
                "status = ?, finished_at = ? WHERE turn_id = ?",
                (
                    _check_text("reply", reply),
                    kind,
                    _sources_json(sources),
                    json.dumps(dict(timings or {})),
                    status,
                    time.time(),
                    turn_id,
                ),
            )
        if cursor.rowcount == 0:
            raise UnknownTurnError(turn_id)

    def turns(
        self,
        *,
        session_id: str | None = None,
        persona_id: str | None = None,
        status: str | None = None,
        finished: bool | None = None,
        limit: int = 100,
    ) -> list[TurnRecord]:
        where, params = _filters(session_id, persona_id, status, finished, "?")
        with self._lock:
            rows = self._conn.execute(_select(where, "?"), (*params, int(limit))).fetchall()
        return [
            TurnRecord(
                seq=row[0],
                turn_id=row[1],
                persona_id=row[2],
                session_id=row[3],
                user_text=row[4],
                reply=row[5],
                kind=row[6],
                sources=tuple(json.loads(row[7])),
                timings=json.loads(row[8]),
                status=row[9],
                started_at=datetime.fromtimestamp(row[10], UTC),
                finished_at=datetime.fromtimestamp(row[11], UTC) if row[11] is not None else None,
            )
            for row in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS persona_turns (
    seq BIGSERIAL PRIMARY KEY,
    turn_id TEXT NOT NULL UNIQUE,
    persona_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    user_text TEXT NOT NULL,
    reply TEXT,
    kind TEXT,
    sources JSONB NOT NULL DEFAULT '[]'::jsonb,
    timings JSONB NOT NULL DEFAULT '{}'::jsonb,
    status TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS persona_turns_session ON persona_turns (session_id, seq);
CREATE INDEX IF NOT EXISTS persona_turns_persona ON persona_turns (persona_id, seq);
"""
# Any constant: replicas starting together serialise their CREATE TABLE IF NOT EXISTS on it
# (concurrent CREATEs of the same table can fail on PostgreSQL's catalog unique index).
_PG_SCHEMA_LOCK = 4_242_001


class PostgresTranscriptStore(TranscriptStore):
    """PostgreSQL through psycopg 3, autocommit: each write is durable when the call returns.

    Args:
        dsn: libpq connection string or URL.
        connect_timeout: Seconds to wait for the server.
    """

    def __init__(self, dsn: str, *, connect_timeout: float = 10.0) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise ImportError(
                f"the PostgreSQL transcript store needs psycopg 3: pip install 'psycopg[binary]' "
                f"({exc})"
            ) from exc
        self._psycopg = psycopg
        self.dsn = dsn
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._conn = self._connect()
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_SCHEMA_LOCK,))
            cur.execute(_PG_SCHEMA)

    def _connect(self) -> Any:
        return self._psycopg.connect(
            self.dsn, autocommit=True, connect_timeout=max(1, int(self._connect_timeout))
        )

    def _execute(self, sql: str, params: Sequence[Any]) -> Any:
        """Run one statement, reconnecting once if the server dropped the connection."""
        with self._lock:
            for attempt in (0, 1):
                if self._conn.closed:
                    self._conn = self._connect()
                try:
                    with self._conn.cursor() as cur:
                        cur.execute(sql, params)
                        rows = cur.fetchall() if cur.description else None
                        return rows, cur.rowcount
                except self._psycopg.OperationalError:
                    # Only retry when the connection itself is gone; a statement that failed
                    # on a live connection is a real error.
                    if attempt or not self._conn.closed:
                        raise
        raise AssertionError("unreachable")

    def begin_turn(
        self, persona_id: str, session_id: str, user_text: str, *, turn_id: str | None = None
    ) -> str:
        turn_id = turn_id or uuid.uuid4().hex
        self._execute(
            "INSERT INTO persona_turns (turn_id, persona_id, session_id, user_text, status) "
            "VALUES (%s, %s, %s, %s, %s)",
            (turn_id, persona_id, session_id, _check_text("user_text", user_text), STARTED),
        )
        return turn_id

    def finish_turn(
        self,
        turn_id: str,
        reply: str,
        sources: Sequence[Source | Mapping[str, Any]] = (),
        timings: Mapping[str, float] | None = None,
        status: str = "ok",
        *,
        kind: str | None = None,
    ) -> None:
        self._validate_finish(status)
        _, count = self._execute(
            "UPDATE persona_turns SET reply = %s, kind = %s, sources = %s::jsonb, "
            "timings = %s::jsonb, status = %s, finished_at = now() WHERE turn_id = %s",
            (
                _check_text("reply", reply),
                kind,
                _sources_json(sources),
                json.dumps(dict(timings or {})),
                status,
                turn_id,
            ),
        )
        if count == 0:
            raise UnknownTurnError(turn_id)

    def turns(
        self,
        *,
        session_id: str | None = None,
        persona_id: str | None = None,
        status: str | None = None,
        finished: bool | None = None,
        limit: int = 100,
    ) -> list[TurnRecord]:
        where, params = _filters(session_id, persona_id, status, finished, "%s")
        rows, _ = self._execute(_select(where, "%s"), (*params, int(limit)))
        return [
            TurnRecord(
                seq=row[0],
                turn_id=row[1],
                persona_id=row[2],
                session_id=row[3],
                user_text=row[4],
                reply=row[5],
                kind=row[6],
                sources=tuple(row[7]),
                timings=dict(row[8]),
                status=row[9],
                started_at=row[10],
                finished_at=row[11],
            )
            for row in rows or []
        ]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def open_store(dsn: str | None = None, *, sqlite_path: str | Path | None = None) -> TranscriptStore:
    """Open the store a DSN names: `postgres(ql)://...` -> PostgreSQL; `sqlite:///path`, a bare
    path, or None (-> `sqlite_path`, default `var/transcripts.sqlite3`) -> SQLite."""
    if dsn and dsn.startswith(("postgresql://", "postgres://")):
        return PostgresTranscriptStore(dsn)
    if dsn and dsn.startswith("sqlite://"):
        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////abs/path.db, sqlite:// memory.
        return SQLiteTranscriptStore(dsn.removeprefix("sqlite://").removeprefix("/") or ":memory:")
    if dsn:
        return SQLiteTranscriptStore(dsn)
    return SQLiteTranscriptStore(sqlite_path or TranscriptStoreConfig().sqlite_path)


def store_from_config(config: TranscriptStoreConfig) -> TranscriptStore:
    return open_store(config.dsn, sqlite_path=config.sqlite_path)
