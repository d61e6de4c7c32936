"""The storage layer on SQLite: one schema with a version, migrations, sessions whose history is
read from the turn audit log, all in one database file.

PostgreSQL (advisory-locked migrations, reconnects) is tested in tests/e2e/test_persona_postgres.py.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from services.core.config import StorageSettings
from services.core.types import ChatMessage
from services.storage.database import open_storage
from services.storage.engine import Database, database_url
from services.storage.migrations import MIGRATIONS, SchemaVersionError
from services.storage.schema import SCHEMA_VERSION
from services.storage.sessions import SessionStore, UnknownSessionError
from services.storage.transcripts import TranscriptStore


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "db" / "avatar.sqlite3"


@pytest.fixture
def storage(path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("AVATAR_DATABASE_URL", raising=False)
    with open_storage(StorageSettings(sqlite_path=str(path), session_ttl_s=60)) as opened:
        yield opened


def _sql(path: Path, query: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(query).fetchall()


def _backdate(path: Path, session_id: str, seconds: float) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE sessions SET updated_at = updated_at - ? WHERE id = ?", (seconds, session_id)
        )


def test_schema_version_is_recorded(path: Path) -> None:
    db = Database(path)
    try:
        assert db.schema_version == SCHEMA_VERSION == max(MIGRATIONS)
        with db.read() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        db.close()
    assert _sql(path, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    tables = {name for (name,) in _sql(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"sessions", "turns", "schema_version"} <= tables


def test_reopening_an_existing_database_is_idempotent(path: Path) -> None:
    with TranscriptStore(path) as first:
        turn = first.begin_turn("p", "s", "kept")
    for _ in range(2):
        with TranscriptStore(path) as again:
            assert again.db.schema_version == SCHEMA_VERSION
            assert [t.turn_id for t in again.turns()] == [turn]
    assert _sql(path, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


def test_replicas_creating_the_schema_at_once_do_not_race(path: Path) -> None:
    opened: list[Database] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(Database(path))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for db in opened:
        db.close()
    assert not errors and len(opened) == 6
    assert _sql(path, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


def test_a_newer_schema_than_the_code_knows_is_refused(path: Path) -> None:
    Database(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (?, '2030-01-01 00:00:00')", (99,))
    with pytest.raises(SchemaVersionError, match=r"schema version 99.*upgrade avatar-serve"):
        Database(path)


def test_the_old_layout_is_opened_but_not_migrated(path: Path, caplog) -> None:
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:  # what the hand-written SessionStore created
        conn.executescript(
            """CREATE TABLE sessions (id TEXT PRIMARY KEY, persona_id TEXT,
                   created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
               CREATE TABLE session_messages (session_id TEXT NOT NULL, seq INTEGER NOT NULL,
                   role TEXT NOT NULL, content TEXT NOT NULL, PRIMARY KEY (session_id, seq));"""
        )
    with caplog.at_level(logging.WARNING, logger="services.storage.migrations"):
        sessions = SessionStore(path)
    assert "session_messages" in caplog.text and "not migrated" in caplog.text
    session = sessions.create()
    assert sessions.get(session.id).id == session.id and sessions.history(session.id) == []
    sessions.close()


def test_sessions_and_turns_share_one_database_file(storage, path: Path) -> None:
    assert storage.sessions.db is storage.transcripts.db is storage.db
    assert storage.sessions.transcripts is storage.transcripts
    session = storage.sessions.create("maya-castellan")
    storage.transcripts.begin_turn("maya-castellan", session.id, "hello")
    assert _sql(path, "SELECT id, persona_id FROM sessions") == [(session.id, "maya-castellan")]
    assert _sql(path, "SELECT session_id, user_text FROM turns") == [(session.id, "hello")]
    with pytest.raises(ValueError, match="same Database"):
        SessionStore(storage.db, transcripts=TranscriptStore("sqlite://"))


def test_history_is_derived_from_finished_turns(storage) -> None:
    sessions, log = storage.sessions, storage.transcripts
    session, other = sessions.create(), sessions.create()
    for i, status in enumerate(("ok", "error", "ok", "cancelled", "ok")):
        turn = log.begin_turn(None, session.id, f"q{i}")
        log.finish_turn(turn, f"a{i}", status=status)
    log.begin_turn(None, session.id, "in flight")  # the turn being processed: not history yet
    log.finish_turn(log.begin_turn(None, other.id, "elsewhere"), "no")

    assert sessions.history(session.id) == [
        ChatMessage("user", "q0"),
        ChatMessage("assistant", "a0"),
        ChatMessage("user", "q2"),
        ChatMessage("assistant", "a2"),
        ChatMessage("user", "q4"),
        ChatMessage("assistant", "a4"),
    ]
    # `limit` counts messages, as when history was a list of messages.
    assert sessions.history(session.id, limit=3) == [
        ChatMessage("assistant", "a2"),
        ChatMessage("user", "q4"),
        ChatMessage("assistant", "a4"),
    ]
    assert sessions.history(session.id, limit=0) == []
    # The review view over the same rows keeps the failed turns' questions.
    reviewed = [m.content for m in log.history(session.id)]
    assert reviewed == ["q0", "a0", "q1", "q2", "a2", "q3", "q4", "a4"]


def test_append_stores_exchanges_as_turns_once(storage) -> None:
    sessions = storage.sessions
    session = sessions.create("theo-brandt")
    sessions.append(
        session.id,
        ChatMessage("user", "u1"),
        ChatMessage("assistant", "a1"),
        ChatMessage("user", "u2 (no reply)"),
    )
    assert sessions.history(session.id) == [
        ChatMessage("user", "u1"),
        ChatMessage("assistant", "a1"),
        ChatMessage("user", "u2 (no reply)"),
    ]
    records = storage.transcripts.turns(session_id=session.id)
    assert [(r.persona_id, r.status, r.reply) for r in records] == [
        ("theo-brandt", "ok", "a1"),
        ("theo-brandt", "ok", None),
    ]
    with pytest.raises(ValueError, match="'assistant'"):
        sessions.append(session.id, ChatMessage("assistant", "a reply to nothing"))
    with pytest.raises(ValueError, match="'system'"):
        sessions.append(session.id, ChatMessage("system", "be brief"))
    with pytest.raises(UnknownSessionError):
        sessions.append("no-such-session", ChatMessage("user", "hi"))
    assert len(storage.transcripts.turns(session_id=session.id)) == 2


def test_ttl_expiry_purges_sessions_but_keeps_the_audit_log(storage, path: Path) -> None:
    sessions = storage.sessions
    idle, active = sessions.create(), sessions.create()
    storage.transcripts.begin_turn(None, idle.id, "said before going idle")
    assert sessions.count() == 2
    _backdate(path, idle.id, 120)
    _backdate(path, active.id, 50)
    with pytest.raises(UnknownSessionError):
        sessions.get(idle.id)
    assert sessions.count() == 1 and sessions.get(active.id).id == active.id
    # A turn keeps its session alive: the TTL counts from the last one (else 100 s idle now).
    storage.transcripts.begin_turn(None, active.id, "still here")
    _backdate(path, active.id, 50)
    assert sessions.get(active.id).id == active.id
    assert sessions.purge_expired() == 1 and sessions.count() == 1
    assert [t.user_text for t in storage.transcripts.turns(session_id=idle.id)] == [
        "said before going idle"
    ]


def test_database_url_hides_passwords_in_errors() -> None:
    with pytest.raises(ValueError) as info:
        database_url("mysql://avatar:secret@db/avatar")
    assert "secret" not in str(info.value)
    assert database_url(":memory:").database is None
