"""The one schema of the app's database, as SQLAlchemy Core tables (SQLite and PostgreSQL).

- `sessions`: one row per conversation; `updated_at` drives the idle TTL; `tenant` and
  `owner_key_id` name the API key that opened it (NULL: opened while the API ran open).
- `turns`: the audit log, one row per turn of any session (persona or plain chat). It is also
  the session history: the LLM's previous messages are the `user_text` + `reply` of a session's
  finished "ok" turns, so a conversation is stored once.
- `api_keys`: the API keys of `services/storage/keys.py`: a public `key_id`, the tenant, the
  SHA-256 of the secret (never the secret), the scopes, and when it was created / revoked.
- `revocations`: personas whose consent was withdrawn (`avatar persona revoke`); never served
  again, and no turn of theirs can be logged (a trigger refuses the insert).
- `erasures`: every deletion from the audit log - who, when, why, which persona, how many rows.
  Version 3 makes `turns` append-only (`services/storage/guards.py`): a finished turn cannot
  change, and a row can only be deleted inside the transaction of an erasure that covers it.
- `schema_version`: one row per applied migration; the highest is the schema in force.

Bump `SCHEMA_VERSION` together with the tables here and add the step that brings a database of the
previous version up to it in `services/storage/migrations.py`.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

SCHEMA_VERSION = 3

metadata = MetaData()

# JSONB on PostgreSQL so SQL readers of the audit log can query into it (sources->0->>'id');
# JSON (text) elsewhere.
_Json = JSON().with_variant(JSONB(), "postgresql")
# SQLite only makes an INTEGER PRIMARY KEY the rowid alias that autoincrements; BIGINT elsewhere.
_Seq = BigInteger().with_variant(Integer(), "sqlite")

sessions = Table(
    "sessions",
    metadata,
    Column("id", Text, primary_key=True),
    Column("persona_id", Text, nullable=True, comment="NULL: plain chat"),
    # Epoch seconds (time.time()), like the TTL arithmetic that reads them.
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # Version 2: the API key that opened the session; another key gets 404 (NULL: open mode).
    Column("tenant", Text, nullable=True),
    Column("owner_key_id", Text, nullable=True),
    Index("sessions_updated_at", "updated_at"),  # count() and purge_expired() scan by it
)

turns = Table(
    "turns",
    metadata,
    # Order of begin_turn calls as the database saw them: replicas' wall clocks disagree, the
    # sequence does not. AUTOINCREMENT on SQLite so a seq is never reused.
    Column("seq", _Seq, primary_key=True, autoincrement=True),
    Column("turn_id", Text, nullable=False, unique=True),
    # No foreign key to sessions: the audit log outlives purged sessions, and CLI turns
    # (`avatar talk`) belong to no stored session.
    Column("session_id", Text, nullable=False),
    Column("persona_id", Text, nullable=True, comment="NULL: plain chat"),
    Column("user_text", Text, nullable=False),
    Column("reply", Text, nullable=True),
    Column("kind", Text, nullable=True),
    Column("sources", _Json, nullable=False),
    Column("timings", _Json, nullable=False),
    Column("status", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    # Version 3: why a turn ended as it did, when the caller knows ("abandoned: ..." for a
    # turn whose replica died, see TranscriptStore.fail_stale_turns).
    Column("reason", Text, nullable=True),
    Index("turns_session", "session_id", "seq"),
    Index("turns_persona", "persona_id", "seq"),
    # Version 3: the few unfinished turns, scanned by fail_stale_turns every few seconds.
    Index(
        "turns_started",
        "started_at",
        sqlite_where=text("status = 'started'"),
        postgresql_where=text("status = 'started'"),
    ),
    sqlite_autoincrement=True,
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", Text, primary_key=True, comment="public part of the token"),
    Column("tenant", Text, nullable=False),
    Column("secret_sha256", Text, nullable=False, comment="hex SHA-256 of the secret"),
    Column("personas", _Json, nullable=False, comment='persona ids, or ["*"]: all + plain chat'),
    Column("may_read_history", Boolean, nullable=False),
    Column("admin", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Index("api_keys_tenant", "tenant"),
)

revocations = Table(
    "revocations",
    metadata,
    Column("persona_id", Text, primary_key=True),
    Column("revoked_at", DateTime(timezone=True), nullable=False),
    Column("revoked_by", Text, nullable=False, comment="who ran the revocation"),
    Column("reason", Text, nullable=False),
)

erasures = Table(
    "erasures",
    metadata,
    Column("id", _Seq, primary_key=True, autoincrement=True),
    Column("kind", Text, nullable=False, comment="revocation | retention"),
    # The rows it covers: this persona's (NULL: plain chat), started before `before` (NULL: all).
    Column("persona_id", Text, nullable=True),
    Column("before", DateTime(timezone=True), nullable=True),
    Column("requested_by", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # NULL only inside the erasure's own transaction: while NULL it allows its deletes.
    Column("rows_deleted", Integer, nullable=True),
    sqlite_autoincrement=True,
)

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)
