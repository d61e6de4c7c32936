"""API keys and tenancy below the router: the key store (hashed at rest, revocation, the
bootstrap key), `services.server.auth` (credentials, scopes, session ownership, the cache),
the auth mode a config resolves to, and the schema migration that added them."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path

import pytest

from services.core.config import AuthSettings, TurnSettings, is_loopback, load_app_config
from services.server.auth import (
    ANONYMOUS,
    Authenticator,
    Principal,
    bootstrap_key,
    websocket_token,
    ws_subprotocol,
)
from services.server.conversation import Conversation
from services.server.requests import ApiError
from services.server.socket_session import SocketSession
from services.storage.engine import Database
from services.storage.keys import InvalidKeyError, KeyStore, RevokedKeyError, new_token
from services.storage.schema import SCHEMA_VERSION
from services.storage.sessions import Session, SessionStore

CONFIGS = Path(__file__).resolve().parents[2] / "deployments" / "configs"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "avatar.sqlite3"


@pytest.fixture
def db(path: Path):
    database = Database(path)
    yield database
    database.close()


@pytest.fixture
def keys(db: Database) -> KeyStore:
    return KeyStore(db)


def _status(call) -> tuple[int, str]:
    with pytest.raises(ApiError) as info:
        call()
    return info.value.status, info.value.reason


def test_keys_are_hashed_at_rest(keys: KeyStore, db: Database, path: Path) -> None:
    key, token = keys.create("acme", ["maya-castellan"], may_read_history=True)
    secret = token.split("_", 2)[2]
    assert token.startswith(f"avk_{key.key_id}_") and len(secret) >= 40
    db.close()  # flush the WAL into the file, then read every byte SQLite wrote
    stored = b"".join(p.read_bytes() for p in path.parent.iterdir())
    assert secret.encode() not in stored and token.encode() not in stored
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored
    assert key.key_id.encode() in stored  # the public part is what names the key


def test_authenticate_accepts_only_the_exact_token(keys: KeyStore) -> None:
    key, token = keys.create("acme", ["*"])
    assert keys.authenticate(token) == key
    key_id, secret = token.split("_", 2)[1:]
    for bad in (f"avk_{key_id}_{secret[:-1]}x", f"avk_{'0' * 12}_{secret}", "avk_nope", ""):
        with pytest.raises(InvalidKeyError) as info:
            keys.authenticate(bad)
        assert secret not in str(info.value)


def test_revoked_keys_fail_and_stay_listed(keys: KeyStore) -> None:
    key, token = keys.create("acme", ["*"])
    other, _ = keys.create("globex", ["*"], admin=True)
    revoked = keys.revoke(key.key_id)
    assert revoked.revoked_at is not None
    assert keys.revoke(key.key_id).revoked_at == revoked.revoked_at  # idempotent
    with pytest.raises(RevokedKeyError):
        keys.authenticate(token)
    assert [k.key_id for k in keys.list()] == [key.key_id, other.key_id]
    assert [k.key_id for k in keys.list(include_revoked=False)] == [other.key_id]
    assert [k.key_id for k in keys.list(tenant="globex")] == [other.key_id]
    with pytest.raises(InvalidKeyError):
        keys.revoke("000000000000")


@pytest.mark.parametrize(
    ("tenant", "personas", "message"),
    [("", ["*"], "tenant"), ("a b", ["*"], "tenant"), ("acme", [], "at least one"),
     ("acme", ["Maya!"], "not persona ids")],
)  # fmt: skip
def test_bad_scopes_are_refused(keys: KeyStore, tenant, personas, message) -> None:
    with pytest.raises(ValueError, match=message):
        keys.create(tenant, personas)


def test_admin_implies_history_and_star_wins(keys: KeyStore) -> None:
    key, _ = keys.create("acme", ["maya-castellan", "*"], admin=True)
    assert key.personas == ("*",) and key.may_read_history and key.admin


def test_bootstrap_key_is_stored_once_hashed_and_stays_revoked(keys: KeyStore) -> None:
    settings = AuthSettings(bootstrap_tenant="ops")
    token = new_token()
    assert bootstrap_key(settings, keys, environ={}) is None
    key_id = bootstrap_key(settings, keys, environ={"AVATAR_BOOTSTRAP_KEY": token})
    assert bootstrap_key(settings, keys, environ={"AVATAR_BOOTSTRAP_KEY": token}) == key_id
    key = keys.authenticate(token)
    assert (key.tenant, key.admin, key.personas) == ("ops", True, ("*",))
    keys.revoke(key_id)
    bootstrap_key(settings, keys, environ={"AVATAR_BOOTSTRAP_KEY": token})
    with pytest.raises(RevokedKeyError):
        keys.authenticate(token)
    clash = f"avk_{key_id}_{new_token().split('_', 2)[2]}"
    with pytest.raises(ValueError, match="another secret"):
        bootstrap_key(settings, keys, environ={"AVATAR_BOOTSTRAP_KEY": clash})
    with pytest.raises(ValueError, match="avatar keys generate"):
        bootstrap_key(settings, keys, environ={"AVATAR_BOOTSTRAP_KEY": "hunter2"})


def test_authenticator_needs_a_valid_key_and_caches_it(keys: KeyStore) -> None:
    now = [0.0]
    auth = Authenticator("keys", keys, cache_s=5, clock=lambda: now[0])
    key, token = keys.create("acme", ["maya-castellan"])
    assert _status(lambda: auth.http({}))[0] == 401
    assert _status(lambda: auth.http({"authorization": f"Basic {token}"}))[0] == 401
    assert _status(lambda: auth.http({"authorization": "Bearer avk_x"}))[0] == 401
    principal = auth.http({"authorization": f"Bearer {token}"})
    assert (principal.tenant, principal.key_id) == ("acme", key.key_id)
    keys.revoke(key.key_id)
    assert auth.authenticate(token) == principal  # within key_cache_s
    now[0] = 6.0
    assert _status(lambda: auth.recheck(principal, token)) == (401, "API key revoked")


def test_open_mode_lets_everyone_in_as_anonymous(keys: KeyStore) -> None:
    auth = Authenticator("open", None)
    assert auth.http({}) is ANONYMOUS
    assert auth.websocket({"authorization": "garbage"}) == (ANONYMOUS, None)
    auth.recheck(ANONYMOUS, None)
    with pytest.raises(ValueError):
        Authenticator("keys", None)


def test_websocket_credentials_from_header_or_subprotocol() -> None:
    browser = {"sec-websocket-protocol": "avatar.v1, avatar.key.avk_abc_def"}
    assert websocket_token(browser) == "avk_abc_def"
    assert ws_subprotocol(browser) == "avatar.v1"
    assert websocket_token({"authorization": "Bearer avk_1_2"}) == "avk_1_2"
    assert websocket_token({}) is None and ws_subprotocol({}) is None


def _principal(tenant="acme", key_id="k1", personas=("maya-castellan",), history=False,
               admin=False) -> Principal:  # fmt: skip
    return Principal(tenant, key_id, None if personas is None else frozenset(personas),
                     history, admin)  # fmt: skip


def test_persona_and_history_scopes() -> None:
    scoped = _principal()
    scoped.check_persona("maya-castellan")
    assert _status(lambda: scoped.check_persona("theo-brandt"))[0] == 403
    assert "plain chat" in _status(lambda: scoped.check_persona(None))[1]
    _principal(personas=None).check_persona(None)
    assert _status(scoped.check_history)[0] == 403
    _principal(history=True).check_history()


def test_a_session_belongs_to_its_key_and_its_tenants_admins() -> None:
    mine = Session("s1", None, 0, 0, "acme", "k1")
    _principal().check_owner(mine)
    ANONYMOUS.check_owner(mine)
    _principal(key_id="k2", admin=True).check_owner(mine)
    for stranger in (_principal(key_id="k2"), _principal(tenant="globex", key_id="k3", admin=True)):
        assert _status(lambda p=stranger: p.check_owner(mine)) == (404, "unknown session 's1'")
    unowned = Session("s2", None, 0, 0)  # opened while the API ran open
    assert _status(lambda: _principal(admin=True).check_owner(unowned))[0] == 404


def test_conversation_records_and_enforces_the_owner(db: Database) -> None:
    conversation = Conversation(None, TurnSettings(), SessionStore(db), fps=25)
    owner = _principal(personas=None)
    session = conversation.open_session(None, owner)
    assert (session.tenant, session.owner_key_id) == ("acme", "k1")
    assert conversation.session(session.id, owner).owner_key_id == "k1"  # read back from the db
    assert _status(lambda: conversation.session(session.id, _principal(key_id="k2")))[0] == 404
    assert _status(lambda: conversation.open_session(None, _principal()))[0] == 403
    assert conversation.open_session().owner_key_id is None


class FakeSocket:
    def __init__(self, *texts: str) -> None:
        self.inbox = [{"type": "websocket.receive", "text": t} for t in texts]
        self.sent: list[dict] = []
        self.closed: tuple[int, str] | None = None

    async def receive(self) -> dict:
        return self.inbox.pop(0) if self.inbox else {"type": "websocket.disconnect"}

    async def send_json(self, data: dict) -> None:
        self.sent.append(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)


def test_a_revoked_key_closes_the_socket_with_a_reason(db: Database) -> None:
    conversation = Conversation(None, TurnSettings(), SessionStore(db), fps=25)
    checks = iter([None, ApiError(401, "API key revoked")])

    def recheck() -> None:
        if (error := next(checks)) is not None:
            raise error

    ws = FakeSocket('{"type": "start"}', '{"type": "text", "text": "hi"}', '{"type": "start"}')
    session = SocketSession(conversation, 1024, ws, _principal(personas=None), recheck)
    asyncio.run(session.run())
    assert [m["type"] for m in ws.sent] == ["session", "error"]
    assert ws.sent[-1] == {"type": "error", "status": 401, "reason": "API key revoked"}
    assert ws.closed == (4401, "API key revoked")
    assert len(ws.inbox) == 1  # nothing was read after the close


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("0.0.0.0", False), ("10.0.0.5", False), ("example.com", False)],
)  # fmt: skip
def test_is_loopback(host, loopback) -> None:
    assert is_loopback(host) is loopback


def test_auth_mode_resolution() -> None:
    assert AuthSettings().resolved_mode("127.0.0.1") == "open"
    assert AuthSettings().resolved_mode("0.0.0.0") == "keys"
    assert AuthSettings(mode="keys").resolved_mode("127.0.0.1") == "keys"
    with pytest.raises(ValueError, match="allow_open_network"):
        AuthSettings(mode="open").resolved_mode("0.0.0.0")
    assert AuthSettings(mode="open", allow_open_network=True).resolved_mode("0.0.0.0") == "open"
    assert load_app_config(CONFIGS / "gpu.yaml").auth_mode() == "keys"
    assert load_app_config(CONFIGS / "local.yaml").auth_mode() == "open"


def test_a_version_1_database_migrates_to_keys_and_owners(path: Path) -> None:
    Database(path).close()
    with sqlite3.connect(path) as conn:  # back to version 1, with a session in it
        conn.execute("DROP TABLE api_keys")
        conn.execute("ALTER TABLE sessions DROP COLUMN tenant")
        conn.execute("ALTER TABLE sessions DROP COLUMN owner_key_id")
        conn.execute("DELETE FROM schema_version")  # a fresh database records only its version
        conn.execute("INSERT INTO schema_version VALUES (1, '2025-01-01 00:00:00')")
        conn.execute("INSERT INTO sessions VALUES ('old', NULL, 1.0, 9e18)")
    db = Database(path)
    try:
        assert db.schema_version == SCHEMA_VERSION == 3
        store = SessionStore(db, ttl_s=1e30)
        assert store.get("old").owner_key_id is None
        assert KeyStore(db).create("acme")[0].tenant == "acme"
    finally:
        db.close()
