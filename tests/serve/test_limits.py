"""Per-key limits, CORS, the WebSocket Origin check and what health endpoints tell, on a real
local Ray Serve app with `auth.mode: keys` (fake backends): past a key's turns per minute or
open sessions the answer is 429 with Retry-After (an `error` event with `retry_after_s` on a
WebSocket); CORS grants only the listed origin; a WebSocket from a foreign page is refused with
4403; unauthenticated /readyz says ready or not, and only an admin key sees the detail."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from services.storage.database import open_storage
from tests.serve.conftest import fake_app_config

pytestmark = pytest.mark.serve

APP_ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def limited(serve_instance):
    """(base URL, KeyStore, state dir) of an app with keys, small limits and one CORS origin."""
    from ray import serve

    from deployments import ray_cluster

    port, state_dir = serve_instance
    config = fake_app_config(
        "limited",
        port,
        state_dir,
        auth={"mode": "keys", "key_cache_s": 0},
        limits={"per_key": {"turns_per_minute": 2, "max_sessions": 3}},
    )
    http = config.http.model_copy(update={"cors_origins": [APP_ORIGIN]})
    config = config.model_copy(update={"http": http})
    url = ray_cluster.deploy(config, route_prefix="/limited")
    storage = open_storage(config.storage)
    yield url, storage.keys, state_dir
    storage.close()
    serve.delete("limited")


def _headers(keys, **scopes) -> dict[str, str]:
    _, token = keys.create("acme", ["*"], **scopes)
    return {"Authorization": f"Bearer {token}"}


def _turn(url: str, headers: dict, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/turn", json=body, headers=headers, timeout=60)


def test_turns_past_the_keys_rate_are_429_with_retry_after(limited) -> None:
    url, keys, _ = limited
    key = _headers(keys)
    first = _turn(url, key, text="one")
    assert first.status_code == 200
    session_id = json.loads(first.text.splitlines()[0])["session_id"]
    assert _turn(url, key, text="two", session_id=session_id).status_code == 200
    refused = _turn(url, key, text="three", session_id=session_id)
    assert refused.status_code == 429, refused.text
    assert "2 turns per minute" in refused.json()["error"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert _turn(url, _headers(keys), text="another key").status_code == 200


def test_open_sessions_past_the_keys_limit_are_429(limited) -> None:
    url, keys, _ = limited
    key = _headers(keys)
    for _ in range(3):
        assert httpx.post(f"{url}/v1/sessions", json={}, headers=key).status_code == 201
    refused = httpx.post(f"{url}/v1/sessions", json={}, headers=key)
    assert refused.status_code == 429 and "3 open sessions" in refused.json()["error"]
    assert int(refused.headers["retry-after"]) > 60  # until the oldest expires (1 h TTL)


def _ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/v1/session"


async def _until_end(ws) -> dict:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if message["type"] in ("done", "error"):
            return message


def test_a_websocket_past_the_keys_rate_gets_a_429_event_and_stays_open(limited) -> None:
    url, keys, _ = limited
    key = _headers(keys)

    async def talk() -> list[dict]:
        async with websockets.connect(_ws_url(url), additional_headers=key, max_size=2**24) as ws:
            await ws.send(json.dumps({"type": "start"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "session"
            ends = []
            for text in ("one", "two", "three"):
                await ws.send(json.dumps({"type": "text", "text": text}))
                ends.append(await _until_end(ws))
            return ends

    one, two, three = asyncio.run(talk())
    assert one["type"] == two["type"] == "done"
    assert (three["type"], three["status"]) == ("error", 429)
    assert 1 <= three["retry_after_s"] <= 60


def test_cors_grants_only_the_listed_origin(limited) -> None:
    url, _, _ = limited
    preflight = {"access-control-request-method": "POST"}
    allowed = httpx.options(f"{url}/v1/turn", headers={"origin": APP_ORIGIN, **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == APP_ORIGIN
    evil = httpx.options(f"{url}/v1/turn", headers={"origin": "https://evil.test", **preflight})
    assert "access-control-allow-origin" not in evil.headers
    simple = httpx.get(f"{url}/healthz", headers={"origin": APP_ORIGIN})
    assert simple.headers["access-control-allow-origin"] == APP_ORIGIN
    assert (
        "access-control-allow-origin"
        not in httpx.get(f"{url}/healthz", headers={"origin": "https://evil.test"}).headers
    )


def test_a_websocket_from_a_foreign_page_is_refused(limited) -> None:
    url, keys, _ = limited
    key = _headers(keys)
    host = url.split("//", 1)[1].split("/", 1)[0]

    async def first_message(origin: str | None):
        async with websockets.connect(_ws_url(url), additional_headers=key, origin=origin) as ws:
            with contextlib.suppress(ConnectionClosed):  # a refused socket may be closed by now
                await ws.send(json.dumps({"type": "start"}))
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message["type"] != "error":
                return message, None
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 30)
            return message, closed.value.rcvd.code

    error, code = asyncio.run(first_message("https://evil.test"))
    assert (error["status"], code) == (403, 4403) and "origin" in error["reason"]
    for origin in (None, APP_ORIGIN, f"http://{host}"):  # no browser, listed, same origin
        session, _ = asyncio.run(first_message(origin))
        assert session["type"] == "session", (origin, session)


def test_health_tells_strangers_only_ready_or_not(limited) -> None:
    url, keys, state_dir = limited
    ready = httpx.get(f"{url}/readyz", timeout=30)
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "stages": {s: {"ok": True} for s in
                                                      ("asr", "llm", "tts", "render")}}  # fmt: skip
    bad_key = {"Authorization": "Bearer avk_000000000000_" + "x" * 43}
    assert httpx.get(f"{url}/readyz", headers=bad_key, timeout=30).json() == ready.json()
    not_admin = httpx.get(f"{url}/readyz", headers=_headers(keys), timeout=30)
    assert not_admin.json() == ready.json()
    admin = httpx.get(f"{url}/readyz", headers=_headers(keys, admin=True), timeout=30).json()
    assert admin["stages"]["llm"]["backend"] == "fake"
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    spec = httpx.get(f"{url}/openapi.json").text
    assert str(state_dir) not in spec and "/home/" not in spec and "site-packages" not in spec
    assert json.loads(spec)["info"]["version"] == "v1"  # the API's, not the software's
