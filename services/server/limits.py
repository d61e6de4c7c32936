"""What one API key may use: open sessions, turns per minute, audio seconds per minute.

Beyond a limit the caller gets 429 with a retry hint (`RetryLater`): HTTP answers carry a
`Retry-After` header and `{"error": ...}`, WebSocket `error` events a `retry_after_s`.

Counting:
  - Open sessions: counted in the database (unexpired sessions whose `owner_key_id` is the key),
    so the bound holds across router replicas. Sessions are never closed explicitly; one counts
    until it has been idle for `storage.session_ttl_s`, and the Retry-After says when the key's
    oldest one expires.
  - Turns and audio seconds per minute: a moving 60 s window per key in this router replica's
    memory (the `limits` library). With N router replicas a key may use up to N times its
    rates; a client that keeps its WebSocket (one replica) gets exactly its rate.
Limits come from `limits.per_key`, or `limits.tenants[<tenant>]` for the keys of a tenant
(0 = unlimited). Open mode has no keys, so nothing here applies to it.
"""

from __future__ import annotations

import math
import time
from typing import Any

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import func, select

from services.core.config import ApiLimits, KeyLimits
from services.core.telemetry import Telemetry
from services.server.events import error_json
from services.server.requests import ApiError
from services.storage.schema import sessions as sessions_table
from services.storage.sessions import SessionStore


class RetryLater(ApiError):
    """A refusal the caller may retry after `retry_after_s`: 429 (a limit) or 503 (overload)."""

    def __init__(self, status: int, reason: str, retry_after_s: float) -> None:
        super().__init__(status, reason)
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        # Extra fields of its WebSocket `error` event (SocketSession sends an ApiError's `extra`).
        self.extra = {"retry_after_s": self.retry_after_s}


def error_event(exc: ApiError) -> dict[str, Any]:
    """The WebSocket `error` event of an ApiError, with `retry_after_s` when it has one."""
    return {**error_json(exc.status, exc.reason), **getattr(exc, "extra", {})}


def error_headers(exc: ApiError) -> dict[str, str]:
    """HTTP headers of an ApiError's answer: `Retry-After` when it has a retry hint."""
    return {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, RetryLater) else {}


class KeyLimiter:
    """Checks and charges one key's use (see the module docstring).

    Args:
        limits: `limits` of the app config (`per_key`, `tenants`).
        sessions: the session store, whose database counts open sessions (None: not counted).
        telemetry: counts refusals in `avatar_requests_rejected{reason=key_...}`.
    """

    def __init__(
        self,
        limits: ApiLimits,
        sessions: SessionStore | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.limits, self.sessions = limits, sessions
        self.telemetry = telemetry or Telemetry()
        self._window = MovingWindowRateLimiter(MemoryStorage())

    def _refuse(self, reason: str, what: str, retry_after_s: float) -> RetryLater:
        self.telemetry.inc("avatar_requests_rejected", reason=reason)
        return RetryLater(429, f"{what}; retry in {math.ceil(retry_after_s)} s", retry_after_s)

    def check_session(self, key_id: str | None, tenant: str | None) -> None:
        """429 if the key already has its most open sessions."""
        bound = self.limits.for_tenant(tenant).max_sessions
        if key_id is None or not bound or self.sessions is None:
            return
        cutoff = time.time() - self.sessions.ttl_s
        query = select(func.count(), func.min(sessions_table.c.updated_at)).where(
            sessions_table.c.owner_key_id == key_id, sessions_table.c.updated_at >= cutoff
        )
        with self.sessions.db.read() as conn:
            count, oldest = conn.execute(query).one()
        if count >= bound:
            retry = (oldest or cutoff) - cutoff  # until the oldest one expires
            what = f"this API key has {count} open sessions (limit {bound}); resume one"
            raise self._refuse("key_sessions", what, retry)

    @staticmethod
    def _items(limits: KeyLimits) -> list[tuple[str, RateLimitItemPerMinute]]:
        """The key's windows that are bounded (0 = unlimited)."""
        items = []
        if limits.turns_per_minute:
            items.append(("turns", RateLimitItemPerMinute(limits.turns_per_minute)))
        if limits.audio_s_per_minute:
            items.append(("audio", RateLimitItemPerMinute(limits.audio_s_per_minute)))
        return items

    def check_turn(self, key_id: str | None, tenant: str | None, audio_s: float = 0.0) -> None:
        """429 (413 for audio longer than a whole minute's budget) if the key may not start
        one more turn with `audio_s` seconds of audio now. Charges nothing: see `charge_turn`."""
        if key_id is None:
            return
        limits = self.limits.for_tenant(tenant)
        for name, item in self._items(limits):
            cost = _cost(name, audio_s)
            if not cost:
                continue
            if cost > item.amount:
                raise ApiError(
                    413,
                    f"{audio_s:.0f} s of audio exceed this API key's {item.amount} s per minute",
                )
            if not self._window.test(item, key_id, cost=cost):
                reset = self._window.get_window_stats(item, key_id).reset_time
                retry = max(1.0, reset - time.time())
                if name == "turns":
                    what = f"this API key may start {item.amount} turns per minute"
                else:
                    what = f"this API key may send {item.amount} s of audio per minute"
                raise self._refuse(f"key_{name}_per_minute", what, retry)

    def charge_turn(self, key_id: str | None, tenant: str | None, audio_s: float = 0.0) -> None:
        """Count one started turn (after `check_turn` passed and the turn was admitted)."""
        if key_id is None:
            return
        for name, item in self._items(self.limits.for_tenant(tenant)):
            cost = _cost(name, audio_s)
            if cost:
                self._window.hit(item, key_id, cost=min(cost, item.amount))

    def charge_audio(self, key_id: str | None, tenant: str | None, seconds: int) -> None:
        """Charge `seconds` of live microphone audio as it arrives (a live turn's audio is not
        charged again when the turn starts); 429 (RetryLater) once the key's window is full."""
        bound = self.limits.for_tenant(tenant).audio_s_per_minute
        if key_id is None or not bound or seconds <= 0:
            return
        item = RateLimitItemPerMinute(bound)
        if not self._window.hit(item, key_id, cost=min(seconds, bound)):
            reset = self._window.get_window_stats(item, key_id).reset_time
            what = f"this API key may send {bound} s of audio per minute; audio dropped"
            raise self._refuse("key_audio_per_minute", what, max(1.0, reset - time.time()))


def _cost(name: str, audio_s: float) -> int:
    """What one turn costs against a window: 1 turn, or its audio in whole seconds (rounded up,
    so a stream of short clips cannot slip through at zero cost)."""
    if name == "turns":
        return 1
    return math.ceil(audio_s) if audio_s > 0 else 0
