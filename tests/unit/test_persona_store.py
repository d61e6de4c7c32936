"""Transcript store on SQLite: write-before-processing, finish, history, audit reads, crashes.

The same behaviour on a real PostgreSQL server is tested in tests/e2e/test_persona_postgres.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from services.persona.corpus import Source
from services.persona.store import (
    SQLiteTranscriptStore,
    TranscriptStoreConfig,
    UnknownTurnError,
    open_store,
    store_from_config,
)
from services.types import ChatMessage

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "var" / "transcripts.sqlite3"


@pytest.fixture
def store(db: Path):
    with SQLiteTranscriptStore(db) as opened:
        yield opened


def test_turn_lifecycle_and_audit_fields(store: SQLiteTranscriptStore) -> None:
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


def test_history_filters_and_order(store: SQLiteTranscriptStore) -> None:
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


def test_finish_errors(store: SQLiteTranscriptStore) -> None:
    with pytest.raises(KeyError) as info:
        store.finish_turn("no-such-turn", "x")
    assert isinstance(info.value, UnknownTurnError)
    turn = store.begin_turn("p", "s", "hi")
    with pytest.raises(ValueError):
        store.finish_turn(turn, "x", status="started")


def test_user_text_survives_a_replica_dying_mid_turn(db: Path) -> None:
    """The row is committed by begin_turn: killing the process right after keeps it."""
    code = (
        "import os, sys; from services.persona.store import SQLiteTranscriptStore; "
        f"s = SQLiteTranscriptStore({str(db)!r}); "
        "print(s.begin_turn('maya-castellan', 'crash', 'words before the crash'), flush=True); "
        "os._exit(1)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    with SQLiteTranscriptStore(db) as survivor:
        (turn,) = survivor.turns(session_id="crash")
    assert turn.turn_id == result.stdout.strip()
    assert (turn.status, turn.user_text) == ("started", "words before the crash")


def test_concurrent_writers_and_two_replicas_share_one_file(db: Path) -> None:
    with SQLiteTranscriptStore(db) as a, SQLiteTranscriptStore(db) as b:

        def work(store: SQLiteTranscriptStore, worker: int) -> None:
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


def test_open_store_picks_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store(None) as default:
        assert isinstance(default, SQLiteTranscriptStore)
    assert (tmp_path / "var" / "transcripts.sqlite3").is_file()
    with open_store("sqlite:///rel.db") as relative:
        assert relative.path == "rel.db"
    with open_store(f"sqlite:///{tmp_path}/abs.db") as absolute:
        assert absolute.path == f"{tmp_path}/abs.db"
    with open_store("sqlite://") as memory:
        assert memory.path == ":memory:"
    config = TranscriptStoreConfig(sqlite_path=str(tmp_path / "c.db"))
    with store_from_config(config) as configured:
        configured.begin_turn("p", "s", "x")
    with pytest.raises(ValueError):
        TranscriptStoreConfig(dsn=None, extra_key=1)
