"""Whether a persona may be served: its consent must not have been revoked.

`avatar persona revoke` records the revocation in the database (`services/storage/audit.py`).
From that commit on the database refuses every new turn of the persona on every replica; this
check is the cheap early refusal in front of it: one read of the small `revocations` table per
`cache_s` per replica, then a dict lookup per session opened and per turn planned. A router
answers a revoked persona with 410 and the revocation's reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from services.storage.audit import AuditLog, PersonaRevokedError, Revocation

log = logging.getLogger(__name__)

__all__ = ["PersonaRevokedError", "RevocationCheck"]


class RevocationCheck:
    """Revoked personas, read at most every `cache_s` seconds.

    Args:
        audit: where revocations are recorded.
        cache_s: how stale the list may be (0: read it at every check).
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        audit: AuditLog,
        *,
        cache_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.audit, self.cache_s, self.clock = audit, cache_s, clock
        self._lock = threading.Lock()
        self._revoked: dict[str, Revocation] | None = None
        self._read_at = 0.0

    def _current(self) -> dict[str, Revocation]:
        now = self.clock()
        with self._lock:
            if self._revoked is not None and now - self._read_at < self.cache_s:
                return self._revoked
            try:
                self._revoked = self.audit.revoked()
            except Exception:
                if self._revoked is None:
                    raise  # never read: nothing to serve from
                # The database hiccupped: keep the last list (it refuses revoked turns itself).
                log.warning("could not re-read persona revocations; using the last list")
            self._read_at = now
            return self._revoked

    def check(self, persona_id: str | None) -> None:
        """Raise PersonaRevokedError if `persona_id` was revoked (None, plain chat, never is)."""
        if persona_id is None:
            return
        revocation = self._current().get(persona_id)
        if revocation is not None:
            raise PersonaRevokedError(revocation)
