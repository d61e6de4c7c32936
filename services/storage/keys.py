"""API keys of the tenants, stored hashed: `KeyStore` over the `api_keys` table.

A token is `avk_<key_id>_<secret>`: `key_id` (12 hex digits) is public - it names the key in
`avatar keys list`, in the sessions it opens and in logs - and `secret` is 32 random bytes
(URL-safe base64). Only the SHA-256 of the secret is stored. A token is a high-entropy random
string, not a password, so one fast hash is the standard (nothing to brute-force); a password
KDF would only slow every request. Comparison is constant-time (`hmac.compare_digest`).

The token is shown once, when it is created (`avatar keys create`); it is never stored, logged
or put in an error message. A revoked key keeps its row (`revoked_at`), so `list` shows it and
its id is never reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Row, insert, select, update
from sqlalchemy.exc import IntegrityError

from services.storage.engine import Database
from services.storage.schema import api_keys

PREFIX = "avk"
ALL_PERSONAS = "*"
_TOKEN = re.compile(r"^avk_([0-9a-f]{12})_([A-Za-z0-9_-]{32,128})$")
TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PERSONA = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class ApiKeyError(LookupError):
    """Base of the key errors; `str()` never contains a secret."""


class InvalidKeyError(ApiKeyError):
    """Not a well-formed token, no such key, or the secret does not match."""


class RevokedKeyError(ApiKeyError):
    """The key existed and has been revoked."""


@dataclass(frozen=True)
class ApiKey:
    """One key, without its secret.

    Attributes:
        key_id: public id (the middle of the token).
        tenant: who the key belongs to; sessions are isolated per key (see `services.server.auth`).
        personas: persona ids it may talk to; `("*",)` = every persona and plain chat.
        may_read_history: may read sessions' history (`GET /v1/sessions/{id}`).
        admin: every scope, over every session of its tenant.
        created_at / revoked_at: UTC; revoked_at None while the key works.
    """

    key_id: str
    tenant: str
    personas: tuple[str, ...]
    may_read_history: bool
    admin: bool
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def all_personas(self) -> bool:
        return ALL_PERSONAS in self.personas


def new_token() -> str:
    """A fresh token (not stored): `avatar keys generate`, e.g. for a bootstrap Secret."""
    return f"{PREFIX}_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def parse_token(token: str) -> tuple[str, str]:
    """(key_id, secret) of a well-formed token; InvalidKeyError otherwise (secret not echoed)."""
    match = _TOKEN.match(token.strip()) if isinstance(token, str) else None
    if match is None:
        raise InvalidKeyError("malformed API key (expected avk_<key id>_<secret>)")
    return match.group(1), match.group(2)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_scopes(tenant: str, personas: Iterable[str]) -> tuple[str, ...]:
    """The validated persona scope; ValueError names a bad tenant or persona id."""
    if not TENANT.match(tenant or ""):
        raise ValueError(f"tenant {tenant!r}: use 1-64 letters, digits, '.', '_' or '-'")
    scope = tuple(dict.fromkeys(p.strip() for p in personas if p.strip()))
    if not scope:
        raise ValueError("give at least one persona id, or * for all")
    if ALL_PERSONAS in scope:
        return (ALL_PERSONAS,)
    bad = [p for p in scope if not PERSONA.match(p)]
    if bad:
        raise ValueError(f"not persona ids: {', '.join(bad)}")
    return scope


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # SQLite hands DATETIMEs back naive; they are UTC
    return value


def _record(row: Row) -> ApiKey:
    return ApiKey(
        key_id=row.key_id,
        tenant=row.tenant,
        personas=tuple(row.personas),
        may_read_history=bool(row.may_read_history),
        admin=bool(row.admin),
        created_at=_utc(row.created_at),
        revoked_at=_utc(row.revoked_at),
    )


class KeyStore:
    """The `api_keys` table of the app's database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        tenant: str,
        personas: Iterable[str] = (ALL_PERSONAS,),
        *,
        may_read_history: bool = False,
        admin: bool = False,
        token: str | None = None,
    ) -> tuple[ApiKey, str]:
        """Store a new key; returns it and its token (the only time the token is known).

        `token` stores a given token (a bootstrap key from a Secret) instead of a fresh one.
        """
        scope = check_scopes(tenant, personas)
        key_id, secret = parse_token(token or new_token())
        key = ApiKey(key_id, tenant, scope, may_read_history or admin, admin, datetime.now(UTC))
        with self.db.write() as conn:
            conn.execute(
                insert(api_keys).values(
                    key_id=key_id,
                    tenant=tenant,
                    secret_sha256=secret_hash(secret),
                    personas=list(scope),
                    may_read_history=key.may_read_history,
                    admin=admin,
                    created_at=key.created_at,
                )
            )
        return key, f"{PREFIX}_{key_id}_{secret}"

    def ensure(self, token: str, tenant: str) -> ApiKey:
        """Store `token` as an admin key of `tenant` unless its key id is stored already.

        Idempotent, and safe when several replicas start at once. A stored key keeps its state
        (a revoked bootstrap key stays revoked: rotate by putting a new token in the Secret).
        ValueError if the stored key with that id has another secret or tenant.
        """
        key_id, secret = parse_token(token)
        with contextlib.suppress(IntegrityError):  # stored before, or by a replica alongside
            self.create(tenant, token=token, admin=True)
        with self.db.read() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).one()
        if row.tenant != tenant or not hmac.compare_digest(row.secret_sha256, secret_hash(secret)):
            raise ValueError(f"API key {key_id} is stored with another secret or tenant")
        return _record(row)

    def authenticate(self, token: str) -> ApiKey:
        """The key a token stands for; InvalidKeyError or RevokedKeyError otherwise."""
        key_id, secret = parse_token(token)
        with self.db.read() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).first()
        # Hash and compare even for an unknown id, so timing does not tell which ids exist.
        stored = row.secret_sha256 if row is not None else "0" * 64
        if not hmac.compare_digest(stored, secret_hash(secret)) or row is None:
            raise InvalidKeyError("invalid API key")
        if row.revoked_at is not None:
            raise RevokedKeyError(f"API key {key_id} has been revoked")
        return _record(row)

    def get(self, key_id: str) -> ApiKey:
        """The key with that id (revoked or not); InvalidKeyError if there is none."""
        with self.db.read() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).first()
        if row is None:
            raise InvalidKeyError(f"no API key {key_id!r}")
        return _record(row)

    def list(self, *, tenant: str | None = None, include_revoked: bool = True) -> list[ApiKey]:
        """Keys, oldest first (never their secrets)."""
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self.db.read() as conn:
            return [_record(row) for row in conn.execute(query)]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key (at once for new requests; open sockets close at their next check).
        Revoking a revoked key changes nothing; an unknown id is InvalidKeyError."""
        with self.db.write() as conn:
            conn.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        return self.get(key_id)
