"""Transcript store on SQLite: write-before-processing, finish, history, audit reads, crashes.

One `TranscriptStore` class serves SQLite and PostgreSQL (SQLAlchemy Core); the same behaviour
on a real PostgreSQL server is tested in tests/e2e/test_persona_postgres.py, and the schema,
migrations and sessions in tests/unit/test_storage.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from services.core.config import StorageSettings
from services.core.types import ChatMessage, Source
from services.storage.database import open_storage
from services.storage.engine import database_url
from services.storage.transcripts import TranscriptStore, UnknownTurnError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "var" / "transcripts.sqlite3"


@pytest.fixture
def store(db: Path):
    with TranscriptStore(db) as opened:
        yield opened


def test_turn_lifecycle_and_audit_fields(store: TranscriptStore) -> None:
    turn = store.begin_turn("maya-castellan", "s1", "Why did you go remote?")
    (started,) = store.turns(session_id="s1")
    assert started.turn_id == turn and started.status == "started" and started.reply is None
    assert started.user_text == "Why did you go remote?" and started.finished_at is None

    source = Source("remote-work.md#1", "remote-work.md", "Fernwick has been remote...", 0.61)
    store.finish_turn(
        turn,
        "We went remote in 2019.",
        [source],
        {"llm_s": 0.4, "total_s": 1.7},
        "ok",
        kind="answer",
    )
    (done,) = store.turns(session_id="s1")
    assert (done.status, done.kind, done.reply) == ("ok", "answer", "We went remote in 2019.")
    assert done.sources[0]["id"] == "remote-work.md#1" and done.sources[0]["score"] == 0.61
    assert done.timings == {"llm_s": 0.4, "total_s": 1.7}
    assert done.finished_at >= done.started_at and done.started_at.tzinfo is not None


def test_history_filters_and_order(store: TranscriptStore) -> None:
    for i in range(5):
        turn = store.begin_turn("maya-castellan", "s1", f"q{i}")
        store.finish_turn(turn, f"a{i}", status="ok" if i != 3 else "error")
    store.begin_turn("theo-brandt", "s2", "other session")
    store.begin_turn("maya-castellan", "s1", "q5 (still running)")

    assert store.history("s1", limit=2) == [
        ChatMessage("user", "q3"),  # its reply failed: the user's words stay, no reply
        ChatMessage("user", "q4"),
        ChatMessage("assistant", "a4"),
    ]
    assert store.history("s1", limit=1, include_unfinished=True) == [
        ChatMessage("user", "q5 (still running)")
    ]
    assert [t.user_text for t in store.turns(persona_id="theo-brandt")] == ["other session"]
    assert [t.user_text for t in store.turns(status="started")] == [
        "other session",
        "q5 (still running)",
    ]
    assert [t.user_text for t in store.turns(session_id="s1", finished=False)] == [
        "q5 (still running)"
    ]
    seqs = [t.seq for t in store.turns(limit=100)]
    assert seqs == sorted(seqs) and len(seqs) == 7
    assert len(store.turns(limit=2)) == 2


def test_finish_errors(store: TranscriptStore) -> None:
    with pytest.raises(KeyError) as info:
        store.finish_turn("no-such-turn", "x")
    assert isinstance(info.value, UnknownTurnError)
    turn = store.begin_turn("p", "s", "hi")
    with pytest.raises(ValueError):
        store.finish_turn(turn, "x", status="started")


def test_user_text_survives_a_replica_dying_mid_turn(db: Path) -> None:
    """The row is committed by begin_turn: killing the process right after keeps it."""
    code = (
        "import os, sys; from services.storage.transcripts import TranscriptStore; "
        f"s = TranscriptStore({str(db)!r}); "
        "print(s.begin_turn('maya-castellan', 'crash', 'words before the crash'), flush=True); "
        "os._exit(1)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    with TranscriptStore(db) as survivor:
        (turn,) = survivor.turns(session_id="crash")
    assert turn.turn_id == result.stdout.strip()
    assert (turn.status, turn.user_text) == ("started", "words before the crash")


def test_concurrent_writers_and_two_replicas_share_one_file(db: Path) -> None:
    with TranscriptStore(db) as a, TranscriptStore(db) as b:

        def work(store: TranscriptStore, worker: int) -> None:
            for i in range(20):
                turn = store.begin_turn("p", f"s{worker}", f"{worker}-{i}")
                store.finish_turn(turn, "ok", timings={"i": i})

        threads = [threading.Thread(target=work, args=(a if w % 2 else b, w)) for w in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rows = a.turns(limit=1000)
        assert len(rows) == 120 and {r.status for r in rows} == {"ok"}
        assert len(b.history("s3", limit=100)) == 40


def test_plain_chat_turns_and_lookup_by_id(store: TranscriptStore) -> None:
    """A turn of a session without a persona is logged too, with persona_id None."""
    turn = store.begin_turn(None, "plain", "Hello")
    store.finish_turn(turn, "Hi there.", timings={"total_s": 0.5})
    record = store.get(turn)
    assert (record.persona_id, record.kind, record.status) == (None, None, "ok")
    assert store.history("plain") == [
        ChatMessage("user", "Hello"),
        ChatMessage("assistant", "Hi there."),
    ]
    with pytest.raises(UnknownTurnError):
        store.get("no-such-turn")


def test_urls_pick_the_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """URLs as users write them; the configured SQLite file is created with its folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AVATAR_DATABASE_URL", raising=False)
    with open_storage(StorageSettings(sqlite_path="var/transcripts.sqlite3")) as default:
        assert isinstance(default.transcripts, TranscriptStore)
        assert default.transcripts.db.dialect == "sqlite"
    assert (tmp_path / "var" / "transcripts.sqlite3").is_file()
    with TranscriptStore("sqlite:///rel.db") as relative:
        assert relative.db.url.database == "rel.db"
    with TranscriptStore(f"sqlite:///{tmp_path}/abs.db") as absolute:
        assert absolute.db.url.database == f"{tmp_path}/abs.db"
    with TranscriptStore("sqlite://") as memory:
        assert memory.db.url.database is None
        memory.begin_turn("p", "s", "x")
    monkeypatch.setenv("AVATAR_DATABASE_URL", f"sqlite:///{tmp_path}/from-env.db")
    with open_storage(StorageSettings(sqlite_path=str(tmp_path / "c.db"))) as configured:
        configured.transcripts.begin_turn("p", "s", "x")
    assert (tmp_path / "from-env.db").is_file() and not (tmp_path / "c.db").exists()
    # What users write for PostgreSQL selects psycopg 3; only SQLite and PostgreSQL are known.
    for url in ("postgresql://u@db:5432/avatar", "postgres://u@db/avatar"):
        assert database_url(url).drivername == "postgresql+psycopg"
    assert database_url("postgresql+psycopg://u@db/x").drivername == "postgresql+psycopg"
    with pytest.raises(ValueError, match="unsupported database URL"):
        database_url("mysql://u:secret@db/avatar")
    with pytest.raises(ValueError):
        StorageSettings(url=None, extra_key=1)
