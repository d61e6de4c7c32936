"""Bring a database to the schema of `services/storage/schema.py`, once per process start.

Every replica runs `migrate` when it opens the database, so two starting at once must not race:
the caller runs it inside one write transaction, and here that transaction first takes a lock
(PostgreSQL: `pg_advisory_xact_lock`, released at commit; SQLite: the transaction was opened
with BEGIN IMMEDIATE, which holds the file's write lock). DDL is transactional on both, so the
second replica waits, then sees the version the first one recorded and does nothing.

- A fresh database (no `schema_version` table) gets the current tables in one `create_all` and
  is stamped with `SCHEMA_VERSION`.
- A database at an older version runs each step in `MIGRATIONS` above its version, in order,
  recording each one.
- A database at a newer version than this code knows is refused (`SchemaVersionError`): old
  code writing into a newer schema could silently corrupt it.
- Every open also (re)installs the audit log's triggers and, on PostgreSQL when the schema owner
  connects, the application role's grants (`services/storage/guards.py`; both idempotent).

Not migrated: the layout before this schema (the hand-written stores' `session_messages` and
`persona_turns` tables, no `schema_version`). Such a database is still opened - its `sessions`
table is reused (given the owner columns of version 2), and those two tables are left alone -
but the old history and audit rows are not copied into `turns`; a warning says so. Copying them
was not required when the stores were merged (the old data lives on in the old tables).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Connection, func, insert, inspect, select, text

from services.storage.guards import grant_app_role, install_guards, owns_tables
from services.storage.schema import (
    SCHEMA_VERSION,
    api_keys,
    erasures,
    metadata,
    revocations,
    schema_version,
    turns,
)

log = logging.getLogger(__name__)

# Any constant shared by every replica of the app: the advisory lock migrations hold on PostgreSQL.
PG_MIGRATION_LOCK = 4_242_002
_OLD_TABLES = ("session_messages", "persona_turns")


class SchemaVersionError(RuntimeError):
    """The database's schema is newer than this code (or otherwise unusable by it)."""


def _initial(conn: Connection) -> None:
    """Version 1: sessions, turns (audit log + history) and schema_version."""
    metadata.create_all(conn)


def _api_keys(conn: Connection) -> None:
    """Version 2: the `api_keys` table, and which key (and tenant) opened each session."""
    api_keys.create(conn)
    _add_session_owner(conn)


def _add_session_owner(conn: Connection) -> None:
    """Add the version-2 owner columns to a `sessions` table that lacks them."""
    present = {column["name"] for column in inspect(conn).get_columns("sessions")}
    for column in ("tenant", "owner_key_id"):
        if column not in present:
            conn.execute(text(f"ALTER TABLE sessions ADD COLUMN {column} TEXT"))


def _audit_integrity(conn: Connection) -> None:
    """Version 3: turns get a `reason` and an index of unfinished ones; `revocations` and
    `erasures` are created; the append-only triggers are installed (by every open, below)."""
    present = {column["name"] for column in inspect(conn).get_columns("turns")}
    if "reason" not in present:
        conn.execute(text("ALTER TABLE turns ADD COLUMN reason TEXT"))
    for index in turns.indexes:
        if index.name == "turns_started":
            index.create(conn, checkfirst=True)
    revocations.create(conn, checkfirst=True)
    erasures.create(conn, checkfirst=True)


# version -> the step that brings a database at version - 1 up to it. A fresh database skips
# them (create_all already builds the newest tables), so each step only ever runs on data
# written by the version before it.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    1: _initial,
    2: _api_keys,
    3: _audit_integrity,
}
assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1)), "one step per schema version"


def current_version(conn: Connection) -> int:
    """The highest version recorded in the database; 0 when it has no schema yet."""
    if not inspect(conn).has_table(schema_version.name):
        return 0
    return conn.execute(select(func.max(schema_version.c.version))).scalar() or 0


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        # Transaction-level: released by the COMMIT/ROLLBACK of this transaction, so a replica
        # that dies mid-migration cannot leave it held (its session ends, the lock goes).
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})


def _stamp(conn: Connection, version: int) -> None:
    conn.execute(insert(schema_version).values(version=version, applied_at=datetime.now(UTC)))


def migrate(conn: Connection, *, where: str = "database") -> int:
    """Create or upgrade the schema inside the caller's write transaction; returns the version.

    Raises:
        SchemaVersionError: the database records a newer version than `SCHEMA_VERSION`.
    """
    _lock(conn)
    version = current_version(conn)
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{where} has schema version {version}, newer than this avatar-serve knows "
            f"({SCHEMA_VERSION}): upgrade avatar-serve, or point it at another database"
        )
    if version == SCHEMA_VERSION:
        _guard(conn, where)
        return version
    if version == 0:
        old = [name for name in _OLD_TABLES if inspect(conn).has_table(name)]
        if old:
            log.warning(
                "%s has tables of the old storage layout (%s); their rows are not migrated "
                "into `turns` (history and audit log start empty)",
                where,
                ", ".join(old),
            )
        metadata.create_all(conn)
        _add_session_owner(conn)  # an old-layout `sessions` table is reused as it is
        _stamp(conn, SCHEMA_VERSION)
        _guard(conn, where)
        log.info("%s: created schema version %d", where, SCHEMA_VERSION)
        return SCHEMA_VERSION
    if not owns_tables(conn):
        raise SchemaVersionError(
            f"{where} has schema version {version} and this avatar-serve needs "
            f"{SCHEMA_VERSION}, but the connected role does not own the tables (the application "
            "role): migrate first with the owner's URL, e.g. `avatar persona erasures`"
        )
    for step in range(version + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[step](conn)
        _stamp(conn, step)
        log.info("%s: migrated schema to version %d", where, step)
    _guard(conn, where)
    return SCHEMA_VERSION


def _guard(conn: Connection, where: str) -> None:
    """The triggers, and the app role's grants, where this role may give them."""
    if not owns_tables(conn):
        return  # the application role: it can neither create triggers nor grant
    if install_guards(conn):
        log.info("%s: installed the audit log's append-only triggers", where)
    if grant_app_role(conn):
        log.info("%s: granted the application role its rights", where)
