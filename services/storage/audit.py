"""Governance of the audit log: consent revocations, recorded erasures, retention purges.

The `turns` table is append-only (`services/storage/guards.py`); the only way rows leave it is
an erasure recorded here, in the same transaction as the delete: what kind (revocation or
retention), which persona, up to when, who asked, why, and how many rows went. Revocations are
kept as rows too: the persona is never served again, and the database refuses its turns.

These writes need DELETE on `turns`: on PostgreSQL that is the schema owner, never the
application role (`can_erase`); on SQLite there is one role.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Row, delete, func, insert, select, update

from services.storage.engine import Database
from services.storage.guards import can_erase
from services.storage.schema import erasures, revocations, turns

PERSONA_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_MAX_REASON = 2000


class PersonaRevokedError(PermissionError):
    """The persona's consent was revoked: it is not served and none of its turns are logged."""

    def __init__(self, revocation: Revocation) -> None:
        super().__init__(revocation.persona_id)
        self.revocation = revocation

    def __str__(self) -> str:
        r = self.revocation
        return (
            f"persona {r.persona_id!r} is no longer served: its consent was revoked on "
            f"{r.revoked_at.date().isoformat()} ({r.reason})"
        )


@dataclass(frozen=True)
class Revocation:
    """A persona whose consent was withdrawn."""

    persona_id: str
    revoked_at: datetime
    revoked_by: str
    reason: str


@dataclass(frozen=True)
class Erasure:
    """One recorded deletion from the audit log.

    Attributes:
        kind: "revocation" (all of a persona's turns) or "retention" (those older than `before`).
        persona_id: whose turns; None = plain chat turns.
        before: rows started before this went; None = all of the persona's.
    """

    id: int
    kind: str
    persona_id: str | None
    before: datetime | None
    requested_by: str
    reason: str
    created_at: datetime
    rows_deleted: int


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands DATETIMEs back naive; they were written in UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _revocation(row: Row) -> Revocation:
    return Revocation(row.persona_id, _utc(row.revoked_at), row.revoked_by, row.reason)


def _text(name: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    return value.strip()[:_MAX_REASON]


def _of_persona(persona_id: str | None):
    """The turns of `persona_id` (None: plain chat's, persona_id IS NULL)."""
    column = turns.c.persona_id
    return column.is_(None) if persona_id is None else column == persona_id


def erase(
    conn: Connection,
    *,
    kind: str,
    persona_id: str | None,
    before: datetime | None,
    requested_by: str,
    reason: str,
) -> int:
    """Delete the covered turns under a recorded erasure, in the caller's write transaction.

    The record is opened first (`rows_deleted` NULL: the triggers then allow these deletes) and
    closed with the count, so no other transaction ever sees it open. Returns the count.
    """
    opened = conn.execute(
        insert(erasures)
        .values(
            kind=kind,
            persona_id=persona_id,
            before=before,
            requested_by=_text("requested_by", requested_by),
            reason=_text("reason", reason),
            created_at=datetime.now(UTC),
        )
        .returning(erasures.c.id)
    ).scalar_one()
    covered = (
        turns.c.persona_id.is_(None) if persona_id is None else turns.c.persona_id == persona_id
    )
    if before is not None:
        covered = covered & (turns.c.started_at < before)
    count = conn.execute(delete(turns).where(covered)).rowcount
    conn.execute(update(erasures).where(erasures.c.id == opened).values(rows_deleted=count))
    return count


class AuditLog:
    """Revocations and erasures over the shared `Database`.

    Args:
        db: the app's database.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def can_erase(self) -> bool:
        """Whether this connection's role may delete turns (purge, revoke)."""
        with self.db.read() as conn:
            return can_erase(conn)

    def revoked(self) -> dict[str, Revocation]:
        """Every revoked persona, by id (a small table: one cheap read)."""
        with self.db.read() as conn:
            rows = conn.execute(select(revocations)).all()
        return {row.persona_id: _revocation(row) for row in rows}

    def revocation(self, persona_id: str) -> Revocation | None:
        with self.db.read() as conn:
            row = conn.execute(
                select(revocations).where(revocations.c.persona_id == persona_id)
            ).first()
        return None if row is None else _revocation(row)

    def revoke(self, persona_id: str, *, reason: str, by: str) -> tuple[Revocation, int]:
        """Record the revocation (kept if one exists) and delete all of the persona's turns under
        an erasure record, in one transaction; returns the revocation and how many turns went.

        Its sessions are kept until they expire (they hold no words, only ids): their next turn
        is then refused with the revocation's reason, not as an unknown session.

        Run again for a persona already revoked, it erases whatever turns appeared since.
        """
        if not isinstance(persona_id, str) or not PERSONA_ID.match(persona_id):
            raise ValueError(f"persona id {persona_id!r} is not a persona id")
        reason, by = _text("reason", reason), _text("by", by)
        with self.db.write() as conn:
            row = conn.execute(
                select(revocations).where(revocations.c.persona_id == persona_id)
            ).first()
            if row is None:
                values = {"persona_id": persona_id, "revoked_at": datetime.now(UTC)}
                values |= {"revoked_by": by, "reason": reason}
                conn.execute(insert(revocations).values(values))
                row = conn.execute(
                    select(revocations).where(revocations.c.persona_id == persona_id)
                ).one()
            count = erase(
                conn,
                kind="revocation",
                persona_id=persona_id,
                before=None,
                requested_by=by,
                reason=reason,
            )
        return _revocation(row), count

    def purge(
        self,
        retention_days: Mapping[str | None, float | None],
        *,
        default_days: float | None = None,
        by: str,
        now: datetime | None = None,
    ) -> dict[str | None, int]:
        """Delete turns older than their persona's retention, one recorded erasure per persona
        with rows to delete; returns rows deleted by persona (None: plain chat).

        `retention_days` maps persona ids (None: plain chat) to days, None = keep forever;
        personas not in it get `default_days`.
        """
        now = now or datetime.now(UTC)
        deleted: dict[str | None, int] = {}
        with self.db.read() as conn:
            present = conn.execute(select(turns.c.persona_id).distinct()).scalars().all()
        for persona_id in sorted(present, key=lambda p: (p is not None, p or "")):
            days = retention_days.get(persona_id, default_days)
            if days is None:
                continue
            before = now - timedelta(days=days)
            covered = _of_persona(persona_id) & (turns.c.started_at < before)
            with self.db.write() as conn:
                old = conn.execute(
                    select(func.count())
                    .select_from(turns)
                    .where(covered, turns.c.started_at < before)
                ).scalar_one()
                if not old:
                    continue  # nothing to delete: no record of nothing, every purge interval
                deleted[persona_id] = erase(
                    conn,
                    kind="retention",
                    persona_id=persona_id,
                    before=before,
                    requested_by=by,
                    reason=f"retention: turns older than {days:g} days",
                )
        return deleted

    def erasures(self, *, persona_id: str | None = None, limit: int = 100) -> list[Erasure]:
        """The most recent recorded erasures, oldest first (of one persona if given)."""
        query = select(erasures)
        if persona_id is not None:
            query = query.where(erasures.c.persona_id == persona_id)
        with self.db.read() as conn:
            rows = conn.execute(query.order_by(erasures.c.id.desc()).limit(int(limit))).all()
        return [
            Erasure(
                row.id,
                row.kind,
                row.persona_id,
                _utc(row.before),
                row.requested_by,
                row.reason,
                _utc(row.created_at),
                row.rows_deleted,
            )
            for row in reversed(rows)
        ]
