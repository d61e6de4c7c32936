"""The storage layer against a real PostgreSQL server that this test starts and stops.

The audit log (`TranscriptStore`), sessions with their history read from it, API keys (hashed,
revocable) and the migrations from version 1 (keys, session owners, the audit log's guards),
replicas migrating the schema at once (advisory lock), and reconnecting after the server drops
connections or restarts (the pool's pre-ping). The audit log's integrity: plpgsql triggers keep
finished turns final and deletes to recorded erasures; the application role (a member of
`avatar_app`) can log and finish turns but neither rewrite nor delete them. SQLite runs the same
code in tests/unit/test_persona_store.py, tests/unit/test_storage.py and test_storage_audit.py.

The server is Debian's `postgresql` (15 here): `initdb` into a fresh temp folder, `pg_ctl start`
on a free loopback port with its unix socket in that folder, one database, the store tests, then
`pg_ctl stop`. PostgreSQL refuses to run as root, so under root the server runs as the `postgres`
system user (`runuser`), and the folder is made outside pytest's tmp_path, whose root-only parent
folders that user cannot enter. Skipped, with the reason, only where no server can be started.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

psycopg = pytest.importorskip("psycopg", reason="pip install 'psycopg[binary]'")

from sqlalchemy import text  # noqa: E402
from sqlalchemy.exc import ProgrammingError  # noqa: E402

from services.core.config import StorageSettings  # noqa: E402
from services.core.types import ChatMessage, Source  # noqa: E402
from services.persona.upkeep import AuditUpkeep  # noqa: E402
from services.storage.audit import PersonaRevokedError  # noqa: E402
from services.storage.database import open_storage  # noqa: E402
from services.storage.engine import Database  # noqa: E402
from services.storage.migrations import SchemaVersionError  # noqa: E402
from services.storage.schema import SCHEMA_VERSION  # noqa: E402
from services.storage.transcripts import (  # noqa: E402
    ABANDONED,
    TranscriptStore,
    TurnFinishedError,
    UnknownTurnError,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def _pg_bin() -> Path | None:
    candidates = [os.environ.get("PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    found = shutil.which("initdb")
    if found:
        candidates.append(str(Path(found).parent))
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").is_file():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(cmd: list[str], run_as: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([*run_as, *cmd], capture_output=True, text=True, timeout=120)


@dataclass
class Server:
    """A running PostgreSQL: `dsn` of its maintenance database `postgres`."""

    dsn: str
    pg_ctl: list[str]
    options: str
    run_as: list[str]

    def restart(self) -> None:
        """Fast restart: every client connection is dropped, the data stays."""
        result = _run([*self.pg_ctl, "-m", "fast", "-o", self.options, "restart"], self.run_as)
        assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """Start PostgreSQL for this module's tests."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root and runuser is missing")
        run_as = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="avatar-pg-"))
    data, sock, log = base / "data", base / "sock", base / "server.log"
    sock.mkdir()
    if owner is not None:
        for path in (base, sock):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    started = False
    try:
        initdb_args = ["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"]
        init = _run([str(bin_dir / "initdb"), "-D", str(data), *initdb_args], run_as)
        if init.returncode != 0:
            pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
        for _ in range(3):  # the free port may be taken between choosing and binding
            port = _free_port()
            options = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1"
            pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60"]
            start = _run([*pg_ctl, "-o", options, "start"], run_as)
            if start.returncode == 0:
                started = True
                break
        if not started:
            detail = log.read_text()[-400:] if log.exists() else start.stderr
            pytest.skip(f"PostgreSQL did not start: {detail.strip()}")
        yield Server(f"postgresql://postgres@127.0.0.1:{port}/postgres", pg_ctl, options, run_as)
    finally:
        if started:
            _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], run_as)
        shutil.rmtree(base, ignore_errors=True)


def _create_db(server_dsn: str, name: str) -> str:
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_dsn.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def dsn(server: Server, request: pytest.FixtureRequest) -> str:
    return _create_db(server.dsn, f"t_{request.node.name[:40].lower()}".replace("[", "_"))


def _backend_pid(store: TranscriptStore) -> int:
    with store.db.read() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def test_turn_lifecycle_on_postgres(dsn: str) -> None:
    with TranscriptStore(dsn) as store:
        assert store.db.dialect == "postgresql"
        assert store.db.url.drivername == "postgresql+psycopg"  # from a postgresql:// URL
        turn = store.begin_turn("maya-castellan", "s1", "Why did you go remote?")
        (started,) = store.turns(session_id="s1")
        assert (started.turn_id, started.status, started.reply) == (turn, "started", None)
        source = Source("remote-work.md#1", "remote-work.md", "Fernwick has been remote...", 0.61)
        store.finish_turn(turn, "Since 2019.", [source], {"total_s": 1.7}, kind="answer")
        (done,) = store.turns(session_id="s1")
        assert (done.status, done.kind, done.reply) == ("ok", "answer", "Since 2019.")
        assert done.sources[0]["id"] == "remote-work.md#1" and done.timings == {"total_s": 1.7}
        assert done.started_at.tzinfo is not None and done.finished_at >= done.started_at
        with pytest.raises(UnknownTurnError):
            store.finish_turn("missing", "x")
        with pytest.raises(ValueError):
            store.finish_turn(turn, "x", status="bogus")

    # The rows are in the database, not in the client: a SQL reader sees them as JSONB.
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT sources->0->>'source', timings->>'total_s' FROM turns"
        ).fetchone()
        versions = conn.execute("SELECT version FROM schema_version").fetchall()
    assert row == ("remote-work.md", "1.7")
    assert versions == [(SCHEMA_VERSION,)]


def test_history_and_filters(dsn: str) -> None:
    with TranscriptStore(dsn) as store:
        for i in range(4):
            turn = store.begin_turn("maya-castellan", "s1", f"q{i}")
            store.finish_turn(turn, f"a{i}", status="ok" if i != 2 else "timeout")
        store.begin_turn("theo-brandt", "s2", "other")
        store.begin_turn("maya-castellan", "s1", "in flight")
        assert store.history("s1", limit=2) == [
            ChatMessage("user", "q2"),
            ChatMessage("user", "q3"),
            ChatMessage("assistant", "a3"),
        ]
        assert [t.user_text for t in store.turns(status="started")] == ["other", "in flight"]
        assert [t.user_text for t in store.turns(persona_id="theo-brandt")] == ["other"]
        assert len(store.turns(limit=3)) == 3


def test_sessions_and_their_history_on_postgres(dsn: str) -> None:
    with open_storage(StorageSettings(url=dsn, session_ttl_s=60)) as storage:
        sessions, log = storage.sessions, storage.transcripts
        session = sessions.create(None)
        assert sessions.get(session.id).persona_id is None and sessions.count() == 1
        log.finish_turn(log.begin_turn(None, session.id, "Hello"), "Hi.")
        log.finish_turn(log.begin_turn(None, session.id, "Broken"), "", status="error")
        sessions.append(session.id, ChatMessage("user", "u"), ChatMessage("assistant", "a"))
        assert sessions.history(session.id) == [
            ChatMessage("user", "Hello"),
            ChatMessage("assistant", "Hi."),
            ChatMessage("user", "u"),
            ChatMessage("assistant", "a"),
        ]
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE sessions SET updated_at = updated_at - 120")
        assert sessions.count() == 0 and sessions.purge_expired() == 1
        assert len(log.turns(session_id=session.id)) == 3  # the audit log outlives the session


def test_api_keys_and_session_owners_on_postgres(dsn: str) -> None:
    """Keys hashed at rest and revocable; a version-1 database migrates to owners and keys."""
    from services.storage.keys import RevokedKeyError

    with open_storage(StorageSettings(url=dsn)) as storage:
        key, token = storage.keys.create("acme", ["maya-castellan"], may_read_history=True)
        assert storage.keys.authenticate(token) == key
        session = storage.sessions.create(None, tenant="acme", owner_key_id=key.key_id)
        assert storage.sessions.get(session.id).owner_key_id == key.key_id
        storage.keys.revoke(key.key_id)
        with pytest.raises(RevokedKeyError):
            storage.keys.authenticate(token)
    with psycopg.connect(dsn, autocommit=True) as conn:
        dump = repr(conn.execute("SELECT * FROM api_keys").fetchall())
        assert token.split("_", 2)[2] not in dump and key.key_id in dump
        _back_to_version_2(conn)
        conn.execute("DROP TABLE api_keys")  # back to version 1
        conn.execute("ALTER TABLE sessions DROP COLUMN tenant, DROP COLUMN owner_key_id")
        conn.execute("DELETE FROM schema_version WHERE version = 2")
    with open_storage(StorageSettings(url=dsn)) as storage:
        assert storage.db.schema_version == SCHEMA_VERSION == 3
        assert storage.sessions.get(session.id).owner_key_id is None
        assert storage.keys.create("acme")[0].tenant == "acme"


def _back_to_version_2(conn) -> None:
    """Undo version 3 (the audit log's guards) on a psycopg connection."""
    conn.execute("DROP TRIGGER turns_append_only ON turns")
    conn.execute("DROP TABLE erasures, revocations")
    conn.execute("DROP FUNCTION avatar_turns_guard, avatar_records_guard")
    conn.execute("DROP INDEX turns_started")
    conn.execute("ALTER TABLE turns DROP COLUMN reason")
    conn.execute("DELETE FROM schema_version")  # a fresh database records only its version
    conn.execute("INSERT INTO schema_version VALUES (1, now()), (2, now())")


def test_user_text_survives_a_replica_dying_mid_turn(dsn: str) -> None:
    code = (
        "import os; from services.storage.transcripts import TranscriptStore; "
        f"s = TranscriptStore({dsn!r}); "
        "print(s.begin_turn('maya-castellan', 'crash', 'said before the crash'), flush=True); "
        "os._exit(1)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    with TranscriptStore(dsn) as survivor:
        (turn,) = survivor.turns(session_id="crash")
    assert turn.turn_id == result.stdout.strip()
    assert (turn.status, turn.user_text) == ("started", "said before the crash")


def test_replicas_start_together_and_write_concurrently(dsn: str) -> None:
    stores: list[TranscriptStore] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_one() -> None:
        try:
            barrier.wait()
            # Each creates the schema if missing: under the advisory lock only one does.
            stores.append(TranscriptStore(Database(dsn)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    openers = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in openers:
        thread.start()
    for thread in openers:
        thread.join()
    assert not errors and len(stores) == 4
    assert {store.db.schema_version for store in stores} == {SCHEMA_VERSION}
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]

    def work(store: TranscriptStore, worker: int) -> None:
        for i in range(15):
            turn = store.begin_turn("p", f"s{worker}", f"{worker}-{i}")
            store.finish_turn(turn, "ok", timings={"i": i})

    workers = [threading.Thread(target=work, args=(stores[w % 4], w)) for w in range(8)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    rows = stores[0].turns(limit=1000)
    assert len(rows) == 120 and {r.status for r in rows} == {"ok"}
    assert len({r.seq for r in rows}) == 120
    for store in stores:
        store.db.close()


def test_reconnects_after_the_server_drops_the_connection(dsn: str) -> None:
    with TranscriptStore(dsn) as store:
        store.begin_turn("p", "s", "before")
        first_backend = _backend_pid(store)
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        # The pooled connection is dead: the pool's pre-ping finds out when it is checked out
        # and hands a new one, so the next statement succeeds.
        store.begin_turn("p", "s", "after")
        assert _backend_pid(store) != first_backend
        assert [t.user_text for t in store.turns(session_id="s")] == ["before", "after"]


def test_reconnects_after_the_server_restarts(server: Server, dsn: str) -> None:
    with open_storage(StorageSettings(url=dsn)) as storage:
        session = storage.sessions.create(None)
        storage.transcripts.begin_turn(None, session.id, "before the restart")
        server.restart()
        storage.transcripts.begin_turn(None, session.id, "after the restart")
        assert storage.sessions.get(session.id).id == session.id
        texts = [t.user_text for t in storage.transcripts.turns(session_id=session.id)]
    assert texts == ["before the restart", "after the restart"]


def _app_role_dsn(server: Server, dsn: str) -> str:
    """Create the group role the grants go to and a login role in it (as an operator would)."""
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        for statement in (
            "CREATE ROLE avatar_app NOLOGIN",
            "CREATE ROLE avatar_router LOGIN IN ROLE avatar_app",
        ):
            with contextlib.suppress(psycopg.errors.DuplicateObject):
                conn.execute(statement)
    return dsn.replace("postgresql://postgres@", "postgresql://avatar_router@")


def test_audit_log_is_append_only_on_postgres(dsn: str) -> None:
    with open_storage(StorageSettings(url=dsn)) as storage:
        log = storage.transcripts
        done = log.begin_turn("maya-castellan", "s1", "Why remote?")
        log.finish_turn(done, "Since 2019.")
        running = log.begin_turn("maya-castellan", "s1", "cut off")
        with pytest.raises(TurnFinishedError):
            log.finish_turn(done, "again")
    with psycopg.connect(dsn, autocommit=True) as conn:  # the owner, a superuser even
        for statement in (
            "UPDATE turns SET reply = 'rewritten' WHERE status = 'ok'",
            "DELETE FROM turns",
            "UPDATE turns SET user_text = 'never said'",
        ):
            with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="append-only"):
                conn.execute(statement)
    with open_storage(StorageSettings(url=dsn)) as storage:
        assert storage.transcripts.fail_stale_turns(1e-3) == 1
        assert storage.transcripts.get(running).reason == ABANDONED
        assert storage.sessions.export("s1")["turns"][1]["status"] == "error"
        revocation, deleted = storage.audit.revoke("maya-castellan", reason="withdrawn", by="dpo")
        assert deleted == 2 and storage.audit.erasures()[0].rows_deleted == 2
        with pytest.raises(PersonaRevokedError, match="withdrawn"):
            storage.transcripts.begin_turn("maya-castellan", "s2", "after the revocation")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in ("UPDATE erasures SET rows_deleted = 0", "DELETE FROM revocations"):
            with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="final"):
                conn.execute(statement)


def test_the_application_role_cannot_rewrite_or_delete_turns(server: Server, dsn: str) -> None:
    app_dsn = _app_role_dsn(server, dsn)
    with open_storage(StorageSettings(url=dsn)) as owner:  # migrates, and grants avatar_app
        old = owner.transcripts.begin_turn(None, "old", "from a replica that died")
    with psycopg.connect(dsn, autocommit=True) as conn:  # backdated by hand: 1 hour ago
        conn.execute("ALTER TABLE turns DISABLE TRIGGER turns_append_only")
        conn.execute("UPDATE turns SET started_at = now() - interval '1 hour'")
        conn.execute("ALTER TABLE turns ENABLE TRIGGER turns_append_only")
    with open_storage(StorageSettings(url=app_dsn)) as app:  # the router's role
        with app.db.read() as conn:
            assert conn.execute(text("SELECT current_user")).scalar() == "avatar_router"
        session = app.sessions.create("maya-castellan")
        turn = app.transcripts.begin_turn("maya-castellan", session.id, "hello")
        app.transcripts.finish_turn(turn, "hi", timings={"total_s": 0.4})
        assert app.sessions.history(session.id)[-1].content == "hi"
        assert app.transcripts.fail_stale_turns(60) == 1  # the router's upkeep works
        assert app.transcripts.get(old).status == "error"
        assert not app.audit.can_erase()
        settings = StorageSettings(url=app_dsn, retention_days=1)
        AuditUpkeep(app, settings).tick()  # purge skipped (logged), no error
        with pytest.raises(ProgrammingError, match="permission denied"):
            app.audit.revoke("maya-castellan", reason="not mine to do", by="router")
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="append-only"):
            conn.execute("UPDATE turns SET reply = 'rewritten', status = 'ok'")
        for statement in (
            "DELETE FROM turns",
            "UPDATE turns SET user_text = 'never said' WHERE status = 'started'",
            "INSERT INTO erasures (kind, persona_id, requested_by, reason, created_at) "
            "VALUES ('retention', 'maya-castellan', 'x', 'x', now())",
            "ALTER TABLE turns DISABLE TRIGGER turns_append_only",
            "TRUNCATE turns",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        assert conn.execute("SELECT count(*) FROM turns").fetchone() == (2,)
    # A schema upgrade is the owner's: the application role says so instead of failing midway.
    with psycopg.connect(dsn, autocommit=True) as conn:
        _back_to_version_2(conn)
    with pytest.raises(SchemaVersionError, match="owner's URL"):
        open_storage(StorageSettings(url=app_dsn))
