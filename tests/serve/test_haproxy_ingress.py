"""`http.ingress: haproxy` (the GPU profile's): Serve's direct ingress behind HAProxy, on a Ray
of its own (Serve reads the choice when Ray starts). Through HAProxy a text turn streams, a
WebSocket session talks, readiness answers, and 40 turns at a cluster sized for 4 are refused
at admission (503 + Retry-After), never mid-stream. How fast those refusals come, against
Ray's proxy, is `loadtests/bench_overload.py`'s to report."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from loadtests.bench_overload import SLOTS, overload, overload_config
from tests.serve.cluster_process import cluster_process
from tests.serve.conftest import free_port

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def haproxy_app(tmp_path_factory):
    state = tmp_path_factory.mktemp("haproxy")
    config = overload_config("haproxy", free_port(), state, ingress="haproxy")
    with cluster_process(config, "/hap", state / "server.log") as url:
        yield url


def test_a_turn_and_readiness_go_through_haproxy(haproxy_app):
    ready = httpx.get(f"{haproxy_app}/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    with httpx.stream("POST", f"{haproxy_app}/v1/turn", json={"text": "Hi"}, timeout=60) as r:
        assert r.status_code == 200
        events = [json.loads(line) for line in r.iter_lines() if line.strip()]
    assert events[0]["type"] == "session" and events[-1]["type"] == "done"
    assert any(e["type"] == "frame" for e in events)


def test_a_websocket_session_talks_through_haproxy(haproxy_app):
    url = haproxy_app.replace("http://", "ws://") + "/v1/session"

    async def talk() -> list[str]:
        async with websockets.connect(url, max_size=2**24) as ws:
            await ws.send(json.dumps({"type": "start"}))
            assert json.loads(await ws.recv())["type"] == "session"
            await ws.send(json.dumps({"type": "text", "text": "hello"}))
            types = []
            while not types or types[-1] not in ("done", "error"):
                types.append(json.loads(await asyncio.wait_for(ws.recv(), 60))["type"])
            return types

    types = asyncio.run(talk())
    assert types[-1] == "done" and "audio" in types and "frame" in types, types


def test_overload_is_refused_at_admission_through_haproxy(haproxy_app):
    result = overload(haproxy_app, 40)
    assert result["other_statuses"] == [], result
    assert result["mid_stream_failures"] == 0, result
    assert result["completed"] == result["admitted"] >= SLOTS, result
    assert result["rejected"] >= 40 - 3 * SLOTS, result
    assert result["rejected_with_retry_after"] == result["rejected"], result
