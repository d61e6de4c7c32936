"""The audit log's integrity on SQLite: append-only turns, abandoned turns closed, retention
purges and revocations recorded as erasures, per-session export, the migration from version 2.

PostgreSQL (the same triggers in plpgsql, and the application role's grants) is tested in
tests/e2e/test_persona_postgres.py.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import IntegrityError

from services.core.config import StorageSettings
from services.core.types import Source
from services.persona.upkeep import AuditUpkeep
from services.storage.database import open_storage
from services.storage.schema import SCHEMA_VERSION, turns
from services.storage.sessions import UnknownSessionError
from services.storage.transcripts import ABANDONED, TurnFinishedError


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "avatar.sqlite3"


@pytest.fixture
def storage(path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("AVATAR_DATABASE_URL", raising=False)
    with open_storage(StorageSettings(sqlite_path=str(path))) as opened:
        yield opened


def _sql(storage, statement: str) -> None:
    with storage.db.write() as conn:
        conn.execute(text(statement))


def _old_turn(storage, persona_id: str | None, session_id: str, days: float, status="ok") -> None:
    """A turn that started `days` ago (inserting is allowed; backdating a row is not)."""
    started = datetime.now(UTC) - timedelta(days=days)
    with storage.db.write() as conn:
        conn.execute(
            insert(turns).values(
                turn_id=f"{session_id}-{days}-{status}",
                persona_id=persona_id,
                session_id=session_id,
                user_text=f"{days} days ago",
                reply=None if status == "started" else "then",
                sources=[],
                timings={},
                status=status,
                started_at=started,
                finished_at=None if status == "started" else started,
            )
        )


def test_finished_turns_are_append_only(storage) -> None:
    log = storage.transcripts
    done = log.begin_turn("maya-castellan", "s1", "Why remote?")
    log.finish_turn(done, "Since 2019.", timings={"total_s": 1.0})
    running = log.begin_turn("maya-castellan", "s1", "And the office?")
    for statement in (
        "UPDATE turns SET reply = 'rewritten' WHERE status = 'ok'",
        "UPDATE turns SET status = 'error' WHERE status = 'ok'",
        "DELETE FROM turns WHERE status = 'ok'",
        "DELETE FROM turns",
        # What was said is final even while the turn runs.
        "UPDATE turns SET user_text = 'never said' WHERE status = 'started'",
    ):
        with pytest.raises(IntegrityError, match="append-only"):
            _sql(storage, statement)
    with pytest.raises(TurnFinishedError, match="already finished"):
        log.finish_turn(done, "again")
    log.finish_turn(running, "It closed.", status="ok")  # a started turn can be finished
    rows = log.turns(session_id="s1")
    assert [(r.user_text, r.reply, r.status) for r in rows] == [
        ("Why remote?", "Since 2019.", "ok"),
        ("And the office?", "It closed.", "ok"),
    ]


def test_erasure_and_revocation_records_are_final(storage) -> None:
    storage.audit.revoke("maya-castellan", reason="consent withdrawn", by="ops")
    for statement in (
        "UPDATE erasures SET rows_deleted = 0",
        "DELETE FROM erasures",
        "UPDATE revocations SET reason = 'changed'",
        "DELETE FROM revocations",
    ):
        with pytest.raises(IntegrityError, match="append-only"):
            _sql(storage, statement)


def test_stale_turns_are_closed_as_abandoned(storage) -> None:
    log = storage.transcripts
    _old_turn(storage, "maya-castellan", "dead-replica", days=1, status="started")
    _old_turn(storage, None, "finished-long-ago", days=1)
    live = log.begin_turn("maya-castellan", "live", "in flight")
    assert log.fail_stale_turns(older_than_s=300) == 1
    (dead,) = log.turns(session_id="dead-replica")
    assert (dead.status, dead.reason) == ("error", ABANDONED) and dead.finished_at is not None
    assert log.get(live).status == "started"  # younger than the threshold: still running
    assert log.turns(session_id="finished-long-ago")[0].status == "ok"
    assert log.fail_stale_turns(older_than_s=300) == 0  # closed once
    # A turn closed under a replica that was only slow: its late finish keeps the log as it is.
    log.finish_turn(dead.turn_id, "late answer")
    assert (log.get(dead.turn_id).status, log.get(dead.turn_id).reply) == ("error", None)
    with pytest.raises(ValueError):
        log.fail_stale_turns(0)


def test_router_upkeep_closes_stale_turns_at_start_and_purges_when_due(storage) -> None:
    _old_turn(storage, "maya-castellan", "dead", days=2, status="started")
    _old_turn(storage, None, "chat", days=40)
    now = [0.0]
    settings = StorageSettings(stale_turn_s=120, retention_days=30, purge_interval_s=3600)
    upkeep = AuditUpkeep(storage, settings, None, clock=lambda: now[0]).started()
    assert storage.transcripts.turns(session_id="dead")[0].status == "error"
    upkeep.tick()  # the first tick purges: plain chat falls under the cluster default
    assert storage.transcripts.turns(session_id="chat") == []
    _old_turn(storage, None, "chat2", days=40)
    now[0] = 10.0
    upkeep.tick()  # not due yet
    assert len(storage.transcripts.turns(session_id="chat2")) == 1
    now[0] = 3601.0
    upkeep.tick()
    assert storage.transcripts.turns(session_id="chat2") == []
    assert [e.kind for e in storage.audit.erasures()] == ["retention", "retention"]


def test_retention_purge_is_per_persona_and_recorded(storage) -> None:
    for days in (1, 10, 100):
        _old_turn(storage, "maya-castellan", "m", days)
        _old_turn(storage, "theo-brandt", "t", days)
        _old_turn(storage, None, "plain", days)
    deleted = storage.audit.purge(
        {"maya-castellan": 30, "theo-brandt": None}, default_days=5, by="cron"
    )
    assert deleted == {"maya-castellan": 1, None: 2}
    left = {(t.session_id, t.user_text) for t in storage.transcripts.turns(limit=100)}
    assert left == {
        ("m", "1 days ago"),
        ("m", "10 days ago"),
        ("t", "1 days ago"),
        ("t", "10 days ago"),
        ("t", "100 days ago"),  # None: kept forever
        ("plain", "1 days ago"),
    }
    records = storage.audit.erasures()
    assert [(e.kind, e.persona_id, e.rows_deleted, e.requested_by) for e in records] == [
        ("retention", None, 2, "cron"),  # plain chat first, then personas by id
        ("retention", "maya-castellan", 1, "cron"),
    ]
    assert "30 days" in records[1].reason and records[1].before < datetime.now(UTC)
    # Nothing past retention now: no new record, and a closed erasure allows no more deletes.
    assert storage.audit.purge({"maya-castellan": 30}, by="cron") == {}
    assert len(storage.audit.erasures()) == 2
    with pytest.raises(IntegrityError, match="append-only"):
        _sql(storage, "DELETE FROM turns WHERE persona_id = 'maya-castellan'")


def test_export_of_a_session_has_every_turn_with_citations_and_timings(storage) -> None:
    session = storage.sessions.create("maya-castellan", tenant="acme", owner_key_id="k1")
    log = storage.transcripts
    source = Source("remote-work.md#1", "remote-work.md", "Fernwick has been remote.", 0.61)
    first = log.begin_turn("maya-castellan", session.id, "Why remote?")
    log.finish_turn(first, "Since 2019.", [source], {"total_s": 1.7}, kind="answer")
    log.finish_turn(log.begin_turn("maya-castellan", session.id, "Boom"), "", status="error")
    log.begin_turn("maya-castellan", session.id, "still running")
    log.begin_turn("maya-castellan", "another-session", "not this one")

    export = storage.sessions.export(session.id)
    assert export["session_id"] == session.id
    assert export["session"]["persona_id"] == "maya-castellan"
    assert export["session"]["tenant"] == "acme" and "T" in export["session"]["created_at"]
    assert [t["user_text"] for t in export["turns"]] == ["Why remote?", "Boom", "still running"]
    answered = export["turns"][0]
    assert answered["sources"][0]["id"] == "remote-work.md#1"
    assert answered["timings"] == {"total_s": 1.7} and answered["kind"] == "answer"
    assert [t["status"] for t in export["turns"]] == ["ok", "error", "started"]
    assert datetime.fromisoformat(answered["started_at"]).tzinfo is not None
    # The session row purged after its TTL: the turns are still exported.
    with storage.db.write() as conn:
        conn.execute(text("DELETE FROM sessions"))
    orphan = storage.sessions.export(session.id)
    assert orphan["session"] is None and len(orphan["turns"]) == 3
    with pytest.raises(UnknownSessionError):
        storage.sessions.export("no-such-session")


V2_SCHEMA = """
CREATE TABLE sessions (id TEXT PRIMARY KEY, persona_id TEXT, created_at FLOAT NOT NULL,
    updated_at FLOAT NOT NULL, tenant TEXT, owner_key_id TEXT);
CREATE INDEX sessions_updated_at ON sessions (updated_at);
CREATE TABLE turns (seq INTEGER PRIMARY KEY AUTOINCREMENT, turn_id TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL, persona_id TEXT, user_text TEXT NOT NULL, reply TEXT, kind TEXT,
    sources JSON NOT NULL, timings JSON NOT NULL, status TEXT NOT NULL,
    started_at DATETIME NOT NULL, finished_at DATETIME);
CREATE INDEX turns_session ON turns (session_id, seq);
CREATE INDEX turns_persona ON turns (persona_id, seq);
CREATE TABLE api_keys (key_id TEXT PRIMARY KEY, tenant TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL, personas JSON NOT NULL, may_read_history BOOLEAN NOT NULL,
    admin BOOLEAN NOT NULL, created_at DATETIME NOT NULL, revoked_at DATETIME);
CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at DATETIME NOT NULL);
INSERT INTO schema_version VALUES (1, '2025-01-01 00:00:00'), (2, '2025-02-01 00:00:00');
INSERT INTO sessions VALUES ('s1', 'maya-castellan', 1.0, 2.0, 'acme', 'k1');
INSERT INTO turns (turn_id, session_id, persona_id, user_text, reply, kind, sources, timings,
    status, started_at, finished_at) VALUES
    ('t1', 's1', 'maya-castellan', 'hello', 'hi', 'answer', '[]', '{"total_s": 1}', 'ok',
     '2025-03-01 10:00:00.000000', '2025-03-01 10:00:01.000000'),
    ('t2', 's1', 'maya-castellan', 'cut off', NULL, NULL, '[]', '{}', 'started',
     '2025-03-01 10:01:00.000000', NULL);
"""


def test_a_version_2_database_migrates_in_place_keeping_its_rows(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.executescript(V2_SCHEMA)
    with open_storage(StorageSettings(url=f"sqlite:///{path}")) as storage:
        assert storage.db.schema_version == SCHEMA_VERSION == 3
        rows = storage.transcripts.turns(session_id="s1")
        assert [(r.turn_id, r.status, r.reason) for r in rows] == [
            ("t1", "ok", None),
            ("t2", "started", None),
        ]
        assert rows[0].timings == {"total_s": 1} and rows[0].started_at.tzinfo is not None
        # The version-3 guards hold on the migrated rows.
        with pytest.raises(IntegrityError, match="append-only"):
            _sql(storage, "DELETE FROM turns WHERE turn_id = 't1'")
        assert storage.transcripts.fail_stale_turns(60) == 1  # t2 was left by a dead replica
        assert storage.audit.revoked() == {}
    with sqlite3.connect(path) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_version")]
        triggers = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'")
        assert versions == [1, 2, 3] and triggers.fetchone()[0] == 8
