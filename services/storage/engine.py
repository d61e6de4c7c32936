"""The engine of the app's one database: `Database(url)`, SQLite or PostgreSQL (psycopg 3).

Opening a `Database` brings its schema up to date (`services/storage/migrations.py`); the stores
(`sessions.py`, `transcripts.py`) share one, and `database.open_storage` opens it from config.

Connections come from SQLAlchemy's pool: `pool_pre_ping` tests each one as it is checked out
and replaces it when the server dropped it (a restart, a failover, `pg_terminate_backend`), so a
replica outlives its database's restarts without code of its own to reconnect.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, create_engine, event, make_url
from sqlalchemy.pool import StaticPool

from services.storage.migrations import migrate

_WRITE = "avatar_write"  # execution option: this transaction will write (see _sqlite_begin)


def database_url(url: str | Path) -> URL:
    """The SQLAlchemy URL of a configured one.

    `postgresql://` and `postgres://` (what users write, and libpq's form) select psycopg 3,
    `postgresql+psycopg://`; `sqlite:///relative.db`, `sqlite:////abs.db` and `sqlite://`
    (memory) are SQLAlchemy's own; a bare path (a `Path`, or a string without `://`) is a SQLite
    file. Anything else is a ValueError: only those two databases are tested.
    """
    if isinstance(url, Path) or "://" not in url:
        path = str(url)
        memory = path in ("", ":memory:")
        return URL.create("sqlite", database=None if memory else str(Path(path).expanduser()))
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise ValueError(
            f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: "
            "use postgresql://user@host:5432/db or sqlite:///path"
        )
    return parsed


def _sqlite_connect(memory: bool):
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # sqlite3's own transaction handling starts a transaction lazily, before the first
        # write, and cannot be told BEGIN IMMEDIATE; switch it off and let _sqlite_begin do it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not memory:
            # WAL: readers never block the writer, and replicas on one host share the file.
            cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL, NORMAL survives a process crash (a replica dying mid-turn), the failure that
        # matters here; only an OS crash can lose the last commits.
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Off by default in SQLite; on, so any foreign key in the schema holds as in PostgreSQL.
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return on_connect


def _sqlite_begin(conn: Connection) -> None:
    # A write transaction takes the write lock up front (IMMEDIATE): a deferred one that reads
    # first and writes later fails with "database is locked" at once when another connection
    # writes meanwhile, instead of waiting out the busy timeout.
    write = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class Database:
    """An engine on one database whose schema is current (migrated when opened).

    Args:
        url: database URL or SQLite path (see `database_url`).
        connect_timeout: seconds to wait for a PostgreSQL server, or for SQLite's write lock.
    """

    def __init__(self, url: str | Path, *, connect_timeout: float = 10.0) -> None:
        self.url = database_url(url)
        kwargs: dict[str, Any] = {}
        sqlite = self.url.get_backend_name() == "sqlite"
        memory = sqlite and self.url.database in (None, "", ":memory:")
        if memory:
            # One shared connection, or each pooled connection would see its own empty database.
            # Memory databases are for tests: concurrent writers need a file.
            kwargs["poolclass"] = StaticPool
        elif sqlite:
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        if sqlite:
            # How long a writer waits for another's write lock before "database is locked":
            # concurrent turns queue on one file, so wait longer than for a server.
            connect_args = {"check_same_thread": False, "timeout": 3 * connect_timeout}
        else:
            connect_args = {"connect_timeout": max(1, int(connect_timeout))}
        self.engine = create_engine(
            self.url,
            pool_pre_ping=True,
            connect_args=connect_args,
            json_serializer=functools.partial(json.dumps, ensure_ascii=False),
            **kwargs,
        )
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_connect(memory))
            event.listen(self.engine, "begin", _sqlite_begin)
        self._writer = self.engine.execution_options(**{_WRITE: True})
        try:
            with self.write() as conn:
                self.schema_version = migrate(conn, where=self.display_url)
        except BaseException:
            self.engine.dispose()
            raise

    @property
    def dialect(self) -> str:
        """The SQLAlchemy dialect name: sqlite or postgresql."""
        return self.engine.dialect.name

    @property
    def display_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that writes: committed when the block ends, rolled back on error."""
        with self._writer.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads (one consistent snapshot on SQLite; rolled back at the end)."""
        with self.engine.connect() as conn:
            yield conn

    def close(self) -> None:
        """Close pooled connections; connections checked out elsewhere close when returned."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.display_url!r}, schema_version={self.schema_version})"
