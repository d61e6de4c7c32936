"""Who is calling: API keys to a `Principal`, its scopes, and the ownership of sessions.

Framework-free, like the rest of `services.server`: the router hands over the request's headers
and gets a `Principal` or an `ApiError` (401: no key, a malformed, unknown or revoked key; 403:
a scope the key lacks; 404: a session of another key, indistinguishable from an unknown one).

Credentials:
  - HTTP, and WebSocket clients that can set headers: `Authorization: Bearer avk_...`.
  - Browsers' WebSockets (which cannot set headers): the subprotocols
    `["avatar.v1", "avatar.key.avk_..."]`. The server accepts `avatar.v1` and never echoes the
    key back. Either way the key is checked when the socket connects, before `start`.

Scopes of a key (`services.storage.keys.ApiKey`): the personas it may talk to (`*` = all of
them and plain chat), `may_read_history` (`GET /v1/sessions/{id}`), `admin` (everything, and
every session of its tenant). A session belongs to the key that opened it.

In open mode (`auth.mode`, see `AuthSettings.resolved_mode`) every caller is `ANONYMOUS`,
allowed everything; the sessions it opens belong to nobody.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from services.core.config import AuthSettings
from services.server.requests import ApiError
from services.storage.keys import ApiKey, ApiKeyError, KeyStore, RevokedKeyError
from services.storage.sessions import Session

log = logging.getLogger(__name__)

WS_PROTOCOL = "avatar.v1"
WS_KEY_PREFIX = "avatar.key."
# WebSocket close codes (4000-4999: the application's own), by the HTTP status they stand for.
WS_CLOSE_CODES = {401: 4401, 403: 4403}


@dataclass(frozen=True)
class Principal:
    """The caller of one request: a tenant's key and its scopes, or anonymous (open mode)."""

    tenant: str | None
    key_id: str | None
    personas: frozenset[str] | None  # None: every persona and plain chat
    may_read_history: bool
    admin: bool

    @classmethod
    def of(cls, key: ApiKey) -> Principal:
        personas = None if key.all_personas or key.admin else frozenset(key.personas)
        return cls(key.tenant, key.key_id, personas, key.may_read_history or key.admin, key.admin)

    @property
    def anonymous(self) -> bool:
        return self.key_id is None

    def check_persona(self, persona_id: str | None) -> None:
        """403 unless this key may talk to `persona_id` (None: plain chat, needs `*`)."""
        if self.personas is None or persona_id in self.personas:
            return
        what = f"persona {persona_id!r}" if persona_id else "plain chat (no persona)"
        raise ApiError(403, f"this API key may not talk to {what}")

    def check_history(self) -> None:
        if not self.may_read_history:
            raise ApiError(403, "this API key may not read session history")

    def check_owner(self, session: Session) -> None:
        """404 (as for an unknown session) unless the session is this key's, or this admin's
        tenant's. A session opened in open mode belongs to no key."""
        if self.anonymous:
            return
        if session.owner_key_id == self.key_id or (self.admin and session.tenant == self.tenant):
            return
        raise ApiError(404, f"unknown session {session.id!r}")

    def owner(self) -> dict[str, str | None]:
        """What a session opened by this caller records about it."""
        return {"tenant": self.tenant, "owner_key_id": self.key_id}


ANONYMOUS = Principal(None, None, None, True, True)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer ...` header (None when absent)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "the Authorization header must be 'Bearer <API key>'")
    return token.strip()


def _offered(headers: Mapping[str, str]) -> list[str]:
    return [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]


def ws_subprotocol(headers: Mapping[str, str]) -> str | None:
    """The subprotocol to accept: `avatar.v1` when offered (a browser that offered any must get
    one back), never the key."""
    return WS_PROTOCOL if WS_PROTOCOL in _offered(headers) else None


def websocket_token(headers: Mapping[str, str]) -> str | None:
    """The token of a WebSocket handshake: `Authorization: Bearer`, else `avatar.key.<token>`."""
    token = bearer_token(headers.get("authorization"))
    keys = [p[len(WS_KEY_PREFIX) :] for p in _offered(headers) if p.startswith(WS_KEY_PREFIX)]
    return token or (keys[0] if keys else None)


class Authenticator:
    """Checks API keys against the `KeyStore`; in open mode, lets everyone in as ANONYMOUS.

    A verified key is trusted for `key_cache_s` before the store is asked again (each replica
    keeps its own cache), so revoking a key takes effect within that long.
    """

    def __init__(
        self,
        mode: str,
        keys: KeyStore | None,
        *,
        cache_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in ("open", "keys"):
            raise ValueError(f"auth mode must be open or keys, not {mode!r}")
        if mode == "keys" and keys is None:
            raise ValueError("auth mode keys needs a KeyStore")
        self.mode, self.keys, self.cache_s, self.clock = mode, keys, cache_s, clock
        self._cache: dict[str, tuple[float, Principal]] = {}

    @property
    def open(self) -> bool:
        return self.mode == "open"

    def authenticate(self, token: str | None) -> Principal:
        """The caller holding `token`; ApiError 401 when keys are required and it fails."""
        if self.open:
            return ANONYMOUS
        if not token:
            raise ApiError(401, "an API key is required: send 'Authorization: Bearer <key>'")
        now = self.clock()
        cached = self._cache.get(token)
        if cached is not None and now - cached[0] < self.cache_s:
            return cached[1]
        try:
            principal = Principal.of(self.keys.authenticate(token))
        except ApiKeyError as exc:
            self._cache.pop(token, None)
            reason = "API key revoked" if isinstance(exc, RevokedKeyError) else str(exc)
            raise ApiError(401, reason) from None
        if len(self._cache) > 10_000:  # bounded: tokens are per tenant, not per request
            self._cache.clear()
        self._cache[token] = (now, principal)
        return principal

    def http(self, headers: Mapping[str, str]) -> Principal:
        """The caller of an HTTP request (headers with lower-case names)."""
        if self.open:
            return ANONYMOUS
        return self.authenticate(bearer_token(headers.get("authorization")))

    def websocket(self, headers: Mapping[str, str]) -> tuple[Principal, str | None]:
        """(caller, its token) of a WebSocket handshake; the token is kept for `recheck`."""
        if self.open:
            return ANONYMOUS, None
        token = websocket_token(headers)
        return self.authenticate(token), token

    def recheck(self, principal: Principal, token: str | None) -> None:
        """401 if the key behind an open socket has been revoked (checked at each turn)."""
        if not principal.anonymous:
            self.authenticate(token)


def bootstrap_key(settings: AuthSettings, keys: KeyStore, environ=os.environ) -> str | None:
    """Store the token in `$bootstrap_key_env` (if set) as an admin key; returns its key id.

    The token reaches the process from a Secret (the Helm chart's `auth.bootstrapKeySecret`);
    only its hash is stored, and neither it nor its secret part is logged.
    """
    token = environ.get(settings.bootstrap_key_env, "").strip()
    if not token:
        return None
    try:
        key = keys.ensure(token, settings.bootstrap_tenant)
    except ApiKeyError:
        raise ValueError(
            f"${settings.bootstrap_key_env} is not an API key; make one with `avatar keys generate`"
        ) from None
    state = "revoked" if key.revoked_at else "active"
    log.info("bootstrap API key %s of tenant %s: %s", key.key_id, key.tenant, state)
    return key.key_id
