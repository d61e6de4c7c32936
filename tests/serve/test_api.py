"""The cluster's HTTP and WebSocket API on a real local Ray Serve instance (fake backends)."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import httpx
import numpy as np
import pytest
import websockets

from services.commands.client import ServerError, turn_events
from services.core.audio import wav_bytes
from services.core.types import ReplyChunk, SpeechChunk, Transcript, VideoFrame
from services.turn.orchestrator import TurnResult

pytestmark = pytest.mark.serve


def kinds(events) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events:
        counts[event["type"]] = counts.get(event["type"], 0) + 1
    return counts


def post_turn(url: str, **body) -> list[dict]:
    response = httpx.post(f"{url}/v1/turn", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines() if line]


def test_health_and_readiness_report_every_stage(fake_app):
    assert httpx.get(f"{fake_app}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{fake_app}/readyz", timeout=30).json()
    assert ready["ready"] is True
    assert set(ready["stages"]) == {"asr", "llm", "tts", "render"}
    # Without an admin key only the verdicts: no backend names, paths or versions.
    assert all(s == {"ok": True} for s in ready["stages"].values())


def test_each_stage_is_its_own_deployment(fake_app):
    from ray import serve

    app = serve.status().applications["fake"]
    assert set(app.deployments) == {"asr", "llm", "tts", "render", "router"}
    for name, deployment in app.deployments.items():
        assert deployment.status == "HEALTHY", name
        assert deployment.replica_states.get("RUNNING", 0) >= 1, name


def test_text_turn_over_http_streams_every_event_kind(fake_app):
    events = post_turn(fake_app, text="Hello there")
    counts = kinds(events)
    assert events[0]["type"] == "session" and events[0]["fps"] == 25.0
    assert events[-1]["type"] == "done"
    assert counts["transcript"] == 1 and counts["reply"] == 3 and counts["audio"] == 3
    assert counts["frame"] > 25
    frames = [e for e in events if e["type"] == "frame"]
    assert [f["index"] for f in frames] == list(range(len(frames)))
    assert base64.b64decode(frames[0]["jpeg_b64"])[:2] == b"\xff\xd8"  # a JPEG
    assert events[-1]["timings"]["time_to_first_frame_s"] > 0


def test_audio_turn_over_http_and_client_objects(fake_app):
    tone = 0.3 * np.sin(np.arange(16000) * 2 * np.pi * 220 / 16000)
    events = list(turn_events(fake_app, audio_bytes=wav_bytes(tone, 16000)))
    assert events[0]["type"] == "session"
    typed = events[1:]
    assert isinstance(typed[0], Transcript) and typed[0].text
    assert any(isinstance(e, ReplyChunk) for e in typed)
    assert any(isinstance(e, SpeechChunk) for e in typed)
    assert any(isinstance(e, VideoFrame) and e.jpeg for e in typed)
    assert isinstance(typed[-1], TurnResult)
    # Each sentence's speech carries its text (from the `reply` event of the same index).
    replies = {e.index: e.text for e in typed if isinstance(e, ReplyChunk)}
    spoken = {e.index: e.text for e in typed if isinstance(e, SpeechChunk)}
    assert spoken == replies and all(spoken.values())


def test_text_and_audio_turns_over_websocket(fake_app):
    url = fake_app.replace("http://", "ws://") + "/v1/session"

    async def talk():
        async with websockets.connect(url, max_size=2**24) as ws:
            await ws.send(json.dumps({"type": "start"}))
            session = json.loads(await ws.recv())
            assert session["type"] == "session"
            seen = []
            await ws.send(json.dumps({"type": "text", "text": "hello"}))
            seen.append(await until_done(ws))
            pcm = (0.2 * np.sin(np.arange(8000) / 5) * 32767).astype("<i2").tobytes()
            await ws.send(json.dumps({"type": "audio_start", "format": "pcm16",
                                      "sample_rate": 16000}))  # fmt: skip
            await ws.send(pcm[:6000])
            await ws.send(pcm[6000:])
            await ws.send(json.dumps({"type": "audio_end"}))
            seen.append(await until_done(ws))
            return session, seen

    async def until_done(ws):
        counts: dict[str, int] = {}
        while True:
            message = json.loads(await ws.recv())
            counts[message["type"]] = counts.get(message["type"], 0) + 1
            if message["type"] in ("done", "error"):
                return counts

    session, turns = asyncio.run(talk())
    for counts in turns:
        assert counts.get("done") == 1 and counts.get("frame", 0) > 0, counts
        assert counts["transcript"] == 1 and counts["audio"] >= 1
    history = httpx.get(f"{fake_app}/v1/sessions/{session['session_id']}").json()["history"]
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]


def test_websocket_protocol_errors_keep_the_socket_open(fake_app):
    url = fake_app.replace("http://", "ws://") + "/v1/session"

    async def talk():
        async with websockets.connect(url) as ws:
            replies = []
            for message in ["not json", json.dumps({"type": "warp"}), json.dumps([1]),
                            json.dumps({"type": "audio_end"})]:  # fmt: skip
                await ws.send(message)
                replies.append(json.loads(await ws.recv()))
            await ws.send(b"\x00\x01")
            replies.append(json.loads(await ws.recv()))
            await ws.send(json.dumps({"type": "start", "session_id": "missing"}))
            replies.append(json.loads(await ws.recv()))
            return replies

    replies = asyncio.run(talk())
    assert [r["status"] for r in replies] == [400, 422, 422, 409, 409, 404]
    assert all(r["type"] == "error" and r["reason"] for r in replies)


@pytest.mark.parametrize(
    ("headers", "body", "status", "reason"),
    [
        ({"content-type": "text/plain"}, b"hello", 415, "unsupported content type"),
        ({"content-type": "application/json"}, b'{"text": ', 400, "malformed JSON"),
        ({"content-type": "application/json"}, b'{"text": ""}', 422, "text is empty"),
        ({"content-type": "application/json"}, b'{"text": "a", "x": 1}', 422, "unknown fields"),
        ({"content-type": "application/json"}, b'{"text": "a", "session_id": "no"}', 404,
         "unknown session"),
        ({"content-type": "audio/wav"}, b"RIFF not really a wav", 415, "not a readable audio"),
        ({"content-type": "audio/wav"}, b"\x00" * (11 * 2**20), 413, "limit"),
    ],
)  # fmt: skip
def test_bad_input_gets_a_4xx_with_a_json_reason(fake_app, headers, body, status, reason):
    response = httpx.post(f"{fake_app}/v1/turn", content=body, headers=headers, timeout=30)
    assert response.status_code == status
    assert reason in response.json()["error"]


def test_unknown_session_lookup_is_404(fake_app):
    response = httpx.get(f"{fake_app}/v1/sessions/nope")
    assert response.status_code == 404 and "unknown session" in response.json()["error"]


def test_sessions_survive_a_router_replica_restart(fake_app):
    import ray

    events = post_turn(fake_app, text="Remember me")
    session_id = events[0]["session_id"]
    router = ray.get_actor(_replica_actor("fake", "router"), namespace="serve")
    ray.kill(router, no_restart=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{fake_app}/v1/sessions/{session_id}", timeout=5)
            if response.status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    history = response.json()["history"]
    assert [m["content"] for m in history][0] == "Remember me"
    events = post_turn(fake_app, text="Still there?", session_id=session_id)
    assert events[-1]["type"] == "done"


def _replica_actor(app: str, deployment: str) -> str:
    import ray

    names = ray.util.list_named_actors(all_namespaces=True)
    for entry in names:
        name = entry["name"]
        if name.startswith("SERVE_REPLICA::") and f"{app}#{deployment}#" in name:
            return name
    raise AssertionError(f"no running replica of {app}/{deployment} among {names}")


def test_client_raises_server_errors(fake_app):
    with pytest.raises(ServerError) as info:
        list(turn_events(fake_app, text="hi", session_id="missing"))
    assert info.value.status == 404


def test_a_persona_session_greets_and_discloses_over_websocket(fake_app):
    url = fake_app.replace("http://", "ws://") + "/v1/session"

    async def talk():
        async with websockets.connect(url, max_size=2**24) as ws:
            await ws.send(json.dumps({"type": "start", "persona_id": "maya-castellan"}))
            messages = [json.loads(await ws.recv())]
            while messages[-1]["type"] not in ("done", "error"):
                messages.append(json.loads(await ws.recv()))
            return messages

    messages = asyncio.run(talk())
    session, done = messages[0], messages[-1]
    assert session["persona_id"] == "maya-castellan"
    assert session["disclosure"]["ai_generated"] is True
    assert done["type"] == "done" and done["metadata"]["kind"] == "greeting"
    assert "AI version of Maya" in done["reply"]
    assert any(m["type"] == "frame" for m in messages)


def test_unknown_persona_is_a_404(fake_app):
    response = httpx.post(f"{fake_app}/v1/sessions", json={"persona_id": "nobody"})
    assert response.status_code == 404
    assert "maya-castellan" in response.json()["error"]
