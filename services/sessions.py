"""Conversation state per session, kept outside the router replicas.

A router replica can die or be replaced at any time; the next request for a session may land
on another replica. So a session (its persona and its message history) lives in a database:
a SQLite file by default (one machine), PostgreSQL when a DSN is configured (a cluster).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from services.types import ChatMessage

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS sessions (
        id TEXT PRIMARY KEY, persona_id TEXT, created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS session_messages (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL,
        PRIMARY KEY (session_id, seq))""",
]


class UnknownSessionError(KeyError):
    """No session with that id (never created, or expired)."""

    def __str__(self) -> str:
        return f"unknown session {self.args[0]!r}"


@dataclass(frozen=True)
class Session:
    id: str
    persona_id: str | None
    created_at: float
    updated_at: float


class SessionStore:
    """Sessions and their history in SQLite or PostgreSQL.

    Args:
        sqlite_path: SQLite file (parent directories are created).
        dsn: PostgreSQL DSN; when given, `sqlite_path` is ignored (needs `psycopg`).
        ttl_s: sessions idle for longer are treated as unknown and purged.
    """

    def __init__(
        self, *, sqlite_path: str | Path | None = None, dsn: str | None = None, ttl_s: float = 3600
    ) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        if dsn:
            import psycopg

            self._conn = psycopg.connect(dsn, autocommit=True)
            self._param = "%s"
        else:
            path = Path(sqlite_path or ":memory:").expanduser()
            if str(path) != ":memory:":
                path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._param = "?"
        for statement in _SCHEMA:
            self._execute(statement)

    def _execute(self, sql: str, args: tuple = ()) -> list[tuple]:
        sql = sql.replace("?", self._param)
        with self._lock:
            cursor = self._conn.execute(sql, args)
            return list(cursor.fetchall()) if cursor.description else []

    def create(self, persona_id: str | None = None) -> Session:
        now = time.time()
        session = Session(uuid.uuid4().hex, persona_id, now, now)
        self._execute(
            "INSERT INTO sessions (id, persona_id, created_at, updated_at) VALUES (?, ?, ?, ?)",
            (session.id, persona_id, now, now),
        )
        return session

    def get(self, session_id: str) -> Session:
        rows = self._execute(
            "SELECT id, persona_id, created_at, updated_at FROM sessions WHERE id = ?",
            (session_id,),
        )
        if not rows or time.time() - rows[0][3] > self.ttl_s:
            raise UnknownSessionError(session_id)
        return Session(*rows[0])

    def history(self, session_id: str, limit: int = 50) -> list[ChatMessage]:
        rows = self._execute(
            "SELECT role, content FROM session_messages WHERE session_id = ? "
            "ORDER BY seq DESC LIMIT ?",
            (session_id, limit),
        )
        return [ChatMessage(role, content) for role, content in reversed(rows)]

    def append(self, session_id: str, *messages: ChatMessage) -> None:
        """Add messages to a session's history (and keep the session alive)."""
        self.get(session_id)
        rows = self._execute(
            "SELECT COALESCE(MAX(seq), -1) FROM session_messages WHERE session_id = ?",
            (session_id,),
        )
        seq = rows[0][0] + 1
        for offset, message in enumerate(messages):
            self._execute(
                "INSERT INTO session_messages (session_id, seq, role, content) VALUES (?, ?, ?, ?)",
                (session_id, seq + offset, message.role, message.content),
            )
        self._execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (time.time(), session_id))

    def count(self) -> int:
        cutoff = time.time() - self.ttl_s
        return self._execute("SELECT COUNT(*) FROM sessions WHERE updated_at >= ?", (cutoff,))[0][0]

    def purge_expired(self) -> int:
        cutoff = time.time() - self.ttl_s
        expired = self._execute("SELECT id FROM sessions WHERE updated_at < ?", (cutoff,))
        for (session_id,) in expired:
            self._execute("DELETE FROM session_messages WHERE session_id = ?", (session_id,))
            self._execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        return len(expired)

    def close(self) -> None:
        self._conn.close()
