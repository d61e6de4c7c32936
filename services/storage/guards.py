"""The database's own guards on the audit log (schema version 3): triggers and role grants.

Code paths can be wrong and replicas can be compromised; the audit log must still hold. So the
rules live in the database, where every writer meets them:

- A finished turn (status other than "started") cannot be updated, and what the user said, who
  said it and when (`turn_id`, `session_id`, `persona_id`, `user_text`, `started_at`) cannot be
  updated at all: finishing a turn fills in its outcome, nothing else.
- A turn can only be deleted while an *open* erasure (a row of `erasures` whose `rows_deleted`
  is still NULL) covers it: same persona (NULL = plain chat), started before its `before`
  (NULL = any time). `services/storage/audit.py` opens one, deletes, and closes it with the
  count, in one transaction, so an open erasure is never visible to anyone else.
- A closed erasure and a revocation cannot be changed or deleted; no turn can be logged for a
  revoked persona (the insert is refused, on every replica, the moment the revocation commits).

On PostgreSQL the role split makes this hold against the application itself: the schema owner
(migrations, `avatar persona revoke|purge`) owns the tables; the router connects as a member of
the group role `APP_ROLE`, which gets SELECT/INSERT on `turns`, UPDATE on its outcome columns
only, and no DELETE (see `grant_app_role`, and the README's "Audit log" for the operator's steps).
A role that does not own the tables can neither drop nor disable these triggers.
"""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, text

# The group role the application's login role is a member of (created by the operator).
APP_ROLE = "avatar_app"
APPEND_ONLY = "audit log is append-only"
_ERASURE_ONLY = "turns are deleted only by a recorded erasure (avatar persona revoke or purge)"

_SQLITE = [
    f"""CREATE TRIGGER IF NOT EXISTS turns_finished_are_final BEFORE UPDATE ON turns
    WHEN OLD.status <> 'started'
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}: a finished turn cannot be changed'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS turns_what_was_said_is_final
    BEFORE UPDATE OF seq, turn_id, session_id, persona_id, user_text, started_at ON turns
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}: what was said, by whom and when is final'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS turns_deleted_only_by_erasure BEFORE DELETE ON turns
    WHEN NOT EXISTS (
        SELECT 1 FROM erasures e WHERE e.rows_deleted IS NULL
        AND e.persona_id IS OLD.persona_id AND (e.before IS NULL OR OLD.started_at < e.before))
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}: {_ERASURE_ONLY}'); END""",
    """CREATE TRIGGER IF NOT EXISTS turns_not_for_revoked_personas BEFORE INSERT ON turns
    WHEN NEW.persona_id IS NOT NULL
        AND EXISTS (SELECT 1 FROM revocations r WHERE r.persona_id = NEW.persona_id)
    BEGIN SELECT RAISE(ABORT, 'persona consent revoked: no turn can be logged for it'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS erasures_closed_are_final BEFORE UPDATE ON erasures
    WHEN OLD.rows_deleted IS NOT NULL
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}: a recorded erasure cannot be changed'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS erasures_kept BEFORE DELETE ON erasures
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}: erasure records are kept'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS revocations_final_update BEFORE UPDATE ON revocations
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}: a revocation is final'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS revocations_final_delete BEFORE DELETE ON revocations
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}: a revocation is final'); END""",
]

# One plpgsql function per table; errors carry SQLSTATE 23000, so drivers raise IntegrityError
# as SQLite's RAISE(ABORT) does.
_PG_RAISE = "USING ERRCODE = 'integrity_constraint_violation'"
_PG = [
    f"""CREATE OR REPLACE FUNCTION avatar_turns_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        IF NEW.persona_id IS NOT NULL
           AND EXISTS (SELECT 1 FROM revocations r WHERE r.persona_id = NEW.persona_id) THEN
          RAISE EXCEPTION 'persona consent revoked: no turn can be logged for it' {_PG_RAISE};
        END IF;
        RETURN NEW;
      ELSIF TG_OP = 'UPDATE' THEN
        IF OLD.status <> 'started' THEN
          RAISE EXCEPTION '{APPEND_ONLY}: a finished turn cannot be changed' {_PG_RAISE};
        END IF;
        IF (NEW.seq, NEW.turn_id, NEW.session_id, NEW.persona_id, NEW.user_text, NEW.started_at)
           IS DISTINCT FROM
           (OLD.seq, OLD.turn_id, OLD.session_id, OLD.persona_id, OLD.user_text, OLD.started_at)
        THEN
          RAISE EXCEPTION '{APPEND_ONLY}: what was said, by whom and when is final' {_PG_RAISE};
        END IF;
        RETURN NEW;
      END IF;
      IF NOT EXISTS (
          SELECT 1 FROM erasures e WHERE e.rows_deleted IS NULL
          AND e.persona_id IS NOT DISTINCT FROM OLD.persona_id
          AND (e.before IS NULL OR OLD.started_at < e.before)) THEN
        RAISE EXCEPTION '{APPEND_ONLY}: {_ERASURE_ONLY}' {_PG_RAISE};
      END IF;
      RETURN OLD;
    END $$""",
    f"""CREATE OR REPLACE FUNCTION avatar_records_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_TABLE_NAME = 'erasures' AND TG_OP = 'UPDATE' THEN  -- nested: AND may not short-cut
        IF OLD.rows_deleted IS NULL THEN
          RETURN NEW;  -- closing the erasure of this transaction with its count
        END IF;
      END IF;
      -- No format placeholders: the driver would take them for its own.
      RAISE EXCEPTION USING ERRCODE = 'integrity_constraint_violation',
        MESSAGE = '{APPEND_ONLY}: ' || TG_TABLE_NAME || ' records are final';
    END $$""",
    "DROP TRIGGER IF EXISTS turns_append_only ON turns",
    """CREATE TRIGGER turns_append_only BEFORE INSERT OR UPDATE OR DELETE ON turns
    FOR EACH ROW EXECUTE FUNCTION avatar_turns_guard()""",
    "DROP TRIGGER IF EXISTS erasures_final ON erasures",
    """CREATE TRIGGER erasures_final BEFORE UPDATE OR DELETE ON erasures
    FOR EACH ROW EXECUTE FUNCTION avatar_records_guard()""",
    "DROP TRIGGER IF EXISTS revocations_final ON revocations",
    """CREATE TRIGGER revocations_final BEFORE UPDATE OR DELETE ON revocations
    FOR EACH ROW EXECUTE FUNCTION avatar_records_guard()""",
]


_PG_TRIGGERS = ("turns_append_only", "erasures_final", "revocations_final")
_SQLITE_TRIGGERS = 8


def install_guards(conn: Connection) -> bool:
    """Create the triggers above unless all are there; returns whether it did."""
    if conn.dialect.name == "postgresql":
        query = "SELECT count(*) FROM pg_trigger WHERE tgname IN :names AND NOT tgisinternal"
        present = conn.execute(
            text(query).bindparams(bindparam("names", expanding=True)),
            {"names": list(_PG_TRIGGERS)},
        ).scalar()
        if present == len(_PG_TRIGGERS):
            return False
        statements = _PG
    else:
        query = "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"
        if conn.execute(text(query)).scalar() >= _SQLITE_TRIGGERS:
            return False
        statements = _SQLITE
    for statement in statements:
        conn.exec_driver_sql(statement)
    return True


def owns_tables(conn: Connection) -> bool:
    """Whether the connected role owns `turns` (or is a member of its owner); True on SQLite."""
    if conn.dialect.name != "postgresql":
        return True
    owner = "SELECT relowner FROM pg_class WHERE oid = to_regclass('turns')"
    return bool(conn.execute(text(f"SELECT pg_has_role(({owner}), 'MEMBER')")).scalar())


# (privilege, table) the app role must hold; checked before granting, so an open is read-only.
_APP_NEEDS = [
    ("SELECT", "schema_version"),
    ("SELECT", "revocations"),
    ("SELECT", "erasures"),
    ("INSERT", "turns"),
    ("DELETE", "sessions"),
    ("UPDATE", "api_keys"),
]


def grant_app_role(conn: Connection) -> bool:
    """On PostgreSQL, give `APP_ROLE` what the router needs and nothing more; returns whether
    it granted anything (False: SQLite, no such role, not the owner, or already granted).

    Run by the owner at every open, so a role created after the schema gets its grants the
    next time an owner-connected process (a CLI command, a migration) starts.
    """
    if conn.dialect.name != "postgresql" or not owns_tables(conn):
        return False
    exists = text("SELECT 1 FROM pg_roles WHERE rolname = :role")
    if conn.execute(exists, {"role": APP_ROLE}).first() is None:
        return False
    check = text("SELECT has_table_privilege(:role, :table, :privilege)")
    if all(
        conn.execute(check, {"role": APP_ROLE, "table": t, "privilege": p}).scalar()
        for p, t in _APP_NEEDS
    ):
        return False
    role = f'"{APP_ROLE}"'
    schema = conn.dialect.identifier_preparer.quote(
        conn.execute(text("SELECT current_schema()")).scalar()
    )
    sequence = conn.execute(text("SELECT pg_get_serial_sequence('turns', 'seq')")).scalar()
    for statement in (
        f"GRANT USAGE ON SCHEMA {schema} TO {role}",
        f"GRANT SELECT ON schema_version, revocations, erasures TO {role}",
        f"GRANT SELECT, INSERT ON turns TO {role}",
        # The outcome of a turn, nothing of what was said; the triggers keep finished ones final.
        f"GRANT UPDATE (reply, kind, sources, timings, status, finished_at, reason) "
        f"ON turns TO {role}",
        f"GRANT USAGE ON SEQUENCE {sequence} TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON sessions TO {role}",  # idle sessions expire
        f"GRANT SELECT, INSERT, UPDATE ON api_keys TO {role}",  # the router's bootstrap key
    ):
        conn.exec_driver_sql(statement)
    return True


def can_erase(conn: Connection) -> bool:
    """Whether the connected role may delete from `turns` (the owner; never `APP_ROLE`)."""
    if conn.dialect.name != "postgresql":
        return True
    return bool(conn.execute(text("SELECT has_table_privilege('turns', 'DELETE')")).scalar())
