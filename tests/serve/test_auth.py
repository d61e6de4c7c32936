"""API keys and tenancy on a real local Ray Serve app with `auth.mode: keys` (fake backends):
no key is 401, a persona outside the key's scope 403, another tenant's session 404 (never its
history), history without the scope 403; a WebSocket without a key gets an `error` event and is
closed, and one whose key is revoked mid-session is closed with the reason."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from services.storage.database import open_storage
from tests.serve.conftest import fake_app_config

pytestmark = pytest.mark.serve

MAYA, THEO = "maya-castellan", "theo-brandt"


@pytest.fixture(scope="module")
def secure(serve_instance):
    """(base URL, KeyStore over the app's database) of an app that requires keys."""
    from deployments import ray_cluster

    port, state_dir = serve_instance
    config = fake_app_config("secure", port, state_dir, auth={"mode": "keys", "key_cache_s": 0})
    url = ray_cluster.deploy(config, route_prefix="/secure")
    storage = open_storage(config.storage)
    yield url, storage.keys
    storage.close()


def _key(keys, tenant: str, personas=("*",), **scopes) -> dict[str, str]:
    _, token = keys.create(tenant, personas, **scopes)
    return {"Authorization": f"Bearer {token}"}


def _turn(url: str, headers: dict, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/turn", json=body, headers=headers, timeout=60)


def test_no_key_is_401_everywhere_but_health(secure) -> None:
    url, _ = secure
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert httpx.get(f"{url}/openapi.json").status_code == 200
    for response in (
        httpx.post(f"{url}/v1/sessions", json={}),
        httpx.get(f"{url}/v1/sessions/whatever"),
        _turn(url, {}, text="hello"),
        _turn(url, {"Authorization": "Bearer avk_000000000000_" + "x" * 43}, text="hello"),
        _turn(url, {"Authorization": "Basic dXNlcjpwYXNz"}, text="hello"),
    ):
        assert response.status_code == 401, response.text
        assert response.json()["error"]


def test_a_persona_outside_the_keys_scope_is_403(secure) -> None:
    url, keys = secure
    theo_only, maya_only = _key(keys, "acme", [THEO]), _key(keys, "acme", [MAYA])
    response = httpx.post(f"{url}/v1/sessions", json={"persona_id": MAYA}, headers=theo_only)
    assert response.status_code == 403 and MAYA in response.json()["error"]
    assert _turn(url, theo_only, text="hi", persona_id=MAYA).status_code == 403
    assert _turn(url, maya_only, text="hi").status_code == 403  # plain chat needs "*"
    # Out of scope is 403 before the persona is even looked up (a 404 would list them).
    response = httpx.post(f"{url}/v1/sessions", json={"persona_id": "nobody"}, headers=maya_only)
    assert response.status_code == 403 and MAYA not in response.json()["error"]
    response = httpx.post(f"{url}/v1/sessions", json={"persona_id": MAYA}, headers=maya_only)
    assert response.status_code == 201 and response.json()["persona_id"] == MAYA


def test_another_tenants_session_is_404_and_history_needs_its_scope(secure) -> None:
    url, keys = secure
    owner = _key(keys, "acme")
    reader = _key(keys, "acme", may_read_history=True)
    other = _key(keys, "globex", may_read_history=True, admin=True)
    response = _turn(url, owner, text="My secret plan")
    assert response.status_code == 200, response.text
    session_id = json.loads(response.text.splitlines()[0])["session_id"]
    history = f"{url}/v1/sessions/{session_id}"
    assert httpx.get(history, headers=owner).status_code == 403  # its own, but no history scope
    for stranger in (reader, other):  # another key of the tenant; another tenant's admin
        response = httpx.get(history, headers=stranger)
        assert response.status_code == 404 and "My secret plan" not in response.text
        assert _turn(url, stranger, text="and?", session_id=session_id).status_code == 404
    admin = _key(keys, "acme", admin=True)
    response = httpx.get(history, headers=admin)
    assert response.status_code == 200
    assert response.json()["history"][0]["content"] == "My secret plan"
    assert _turn(url, owner, text="still mine", session_id=session_id).status_code == 200


async def _closed(ws) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(ws.recv(), 30)
    return info.value.rcvd.code, info.value.rcvd.reason


def test_a_websocket_without_a_valid_key_gets_an_error_and_is_closed(secure) -> None:
    url, _ = secure
    ws_url = url.replace("http://", "ws://") + "/v1/session"

    async def talk(**kwargs):
        async with websockets.connect(ws_url, **kwargs) as ws:
            error = json.loads(await asyncio.wait_for(ws.recv(), 30))
            return error, await _closed(ws)

    error, closed = asyncio.run(talk())
    assert error["type"] == "error" and error["status"] == 401 and "API key" in error["reason"]
    assert closed == (4401, error["reason"])
    browser = ["avatar.v1", "avatar.key.avk_000000000000_" + "y" * 43]
    error, closed = asyncio.run(talk(subprotocols=browser))
    assert (error["status"], error["reason"], closed) == (
        401,
        "invalid API key",
        (4401, error["reason"]),
    )


def test_websocket_scopes_and_ownership_apply_at_start(secure) -> None:
    url, keys = secure
    ws_url = url.replace("http://", "ws://") + "/v1/session"
    maya_only = _key(keys, "acme", [MAYA])
    token = maya_only["Authorization"].removeprefix("Bearer ")
    foreign = json.loads(_turn(url, _key(keys, "globex"), text="hi").text.splitlines()[0])

    async def talk():
        # A browser's way: the key as a subprotocol; the server picks avatar.v1, never the key.
        protocols = ["avatar.v1", f"avatar.key.{token}"]
        async with websockets.connect(ws_url, subprotocols=protocols) as ws:
            assert ws.subprotocol == "avatar.v1"
            replies = []
            for start in ({"persona_id": THEO}, {"session_id": foreign["session_id"]}):
                await ws.send(json.dumps({"type": "start", **start}))
                replies.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
            await ws.send(json.dumps({"type": "start", "persona_id": MAYA}))
            replies.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
            return replies

    forbidden, unknown, session = asyncio.run(talk())
    assert (forbidden["type"], forbidden["status"]) == ("error", 403)
    assert (unknown["type"], unknown["status"]) == ("error", 404)
    assert session["type"] == "session" and session["persona_id"] == MAYA


def test_revoking_a_key_mid_session_closes_the_socket_with_a_reason(secure) -> None:
    url, keys = secure
    ws_url = url.replace("http://", "ws://") + "/v1/session"
    key, token = keys.create("acme", ["*"])

    async def until_done(ws) -> str:
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if message["type"] in ("done", "error"):
                return message["type"]

    async def talk():
        headers = {"Authorization": f"Bearer {token}"}
        async with websockets.connect(ws_url, additional_headers=headers, max_size=2**24) as ws:
            await ws.send(json.dumps({"type": "start"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "session"
            await ws.send(json.dumps({"type": "text", "text": "hello"}))
            assert await until_done(ws) == "done"
            keys.revoke(key.key_id)  # in the database the router reads (key_cache_s: 0)
            await ws.send(json.dumps({"type": "text", "text": "still there?"}))
            error = json.loads(await asyncio.wait_for(ws.recv(), 30))
            return error, await _closed(ws)

    error, closed = asyncio.run(talk())
    assert error == {"type": "error", "status": 401, "reason": "API key revoked"}
    assert closed == (4401, "API key revoked")
    assert _turn(url, {"Authorization": f"Bearer {token}"}, text="hi").status_code == 401
