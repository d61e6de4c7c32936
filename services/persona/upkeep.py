"""The audit log's upkeep, run by every router replica: abandoned turns, and retention.

- `fail_stale`: turns still "started" after `storage.stale_turn_s` were abandoned by a replica
  that died mid-turn; they are closed as "error" (`TranscriptStore.fail_stale_turns`). Run at
  router start and every few seconds.
- `purge`: turns older than their persona's `retention_days` (the pack's, else the cluster's
  `storage.retention_days`) are deleted under recorded erasures (`AuditLog.purge`). Run every
  `storage.purge_interval_s`, and only where the database role may delete turns: with the
  PostgreSQL application role it may not, and the operator runs `avatar persona purge` as the
  schema owner instead (logged once).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

from services.core.config import StorageSettings
from services.persona.pack import PackError, load_config
from services.storage.database import Storage

log = logging.getLogger(__name__)


def retention_days(registry, default: int | None) -> dict[str | None, int | None]:
    """Days to keep each pack's turns, by persona id: the pack's `retention_days`, else
    `default`; None = keep.

    A pack that does not load keeps its turns: its own setting cannot be read, and deleting too
    early cannot be undone. Turns of personas without a pack any more, and plain chat's, get the
    default from `AuditLog.purge`.
    """
    days: dict[str | None, int | None] = {}
    for persona_id in registry.ids():
        try:
            own = load_config(registry.packs_dir / persona_id).retention_days
        except PackError as exc:
            log.warning("retention of %s unknown (%s): its turns are kept", persona_id, exc)
            days[persona_id] = None
            continue
        days[persona_id] = own if own is not None else default
    return days


class AuditUpkeep:
    """Closes abandoned turns and enforces retention for one router replica.

    Args:
        storage: the app's stores (`transcripts`, `audit`).
        settings: `stale_turn_s`, `retention_days`, `purge_interval_s`.
        personas: the app's `Personas` (their packs' retention), or None when personas are off.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        storage: Storage,
        settings: StorageSettings,
        personas=None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transcripts, self.audit, self.settings = storage.transcripts, storage.audit, settings
        self.registry = getattr(personas, "registry", None)
        self.clock = clock
        self._last_purge: float | None = None
        self._may_erase: bool | None = None

    def started(self) -> AuditUpkeep:
        """At router start: close what dead replicas left (before serving); returns self."""
        self.fail_stale()
        return self

    def fail_stale(self) -> int:
        """Close the turns abandoned by dead replicas; returns how many."""
        return self.transcripts.fail_stale_turns(self.settings.stale_turn_s)

    def purge(self, *, by: str | None = None) -> dict[str | None, int]:
        """Delete the turns past retention (recorded); rows deleted by persona."""
        default = self.settings.retention_days
        days = retention_days(self.registry, default) if self.registry is not None else {}
        return self.audit.purge(
            days, default_days=default, by=by or f"router@{socket.gethostname()}"
        )

    def tick(self) -> None:
        """One round of the router's background loop: stale turns always, the purge when due.
        Never raises: a database hiccup is logged, and the next round tries again."""
        try:
            self.fail_stale()
            now = self.clock()
            if self._last_purge is None or now - self._last_purge >= self.settings.purge_interval_s:
                self._last_purge = now
                self._purge_if_allowed()
        except Exception:  # noqa: BLE001 - the loop must outlive a database outage
            log.exception("audit log upkeep failed")

    def _purge_if_allowed(self) -> None:
        if self._may_erase is None:
            self._may_erase = self.audit.can_erase()
            if not self._may_erase:
                log.info(
                    "retention purge skipped on this replica: its database role may not delete "
                    "turns (the application role); run `avatar persona purge` as the owner"
                )
        if self._may_erase:
            deleted = self.purge()
            if deleted:
                log.info("retention purge deleted %s", deleted)
