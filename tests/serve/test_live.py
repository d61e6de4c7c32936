"""The live protocol on Ray Serve (fake backends): a cut reply leaves no work behind in the
stage replicas, and binary media arrives paced."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import websockets

from services.server.media import KIND_AUDIO, KIND_JPEG, unpack
from tests.serve.conftest import fake_app_config

pytestmark = pytest.mark.serve

REPLY = " ".join(f"This is sentence number {i} of a long answer." for i in range(1, 7))


@pytest.fixture(scope="module")
def slow_app(serve_instance):
    """Fakes slow enough that a reply is still being produced when it is cut."""
    from deployments import ray_cluster

    port, state_dir = serve_instance
    config = fake_app_config(
        "livecut",
        port,
        state_dir,
        stages={
            "llm": {"backend": "fake", "options": {"reply": REPLY, "per_token_s": 0.03}},
            "tts": {"backend": "fake", "options": {"latency_s": 0.3}},
            "render": {
                "backend": "fake",
                "options": {"width": 64, "height": 64, "per_frame_s": 0.01},
            },
        },  # fmt: skip
    )
    url = ray_cluster.deploy(config, route_prefix="/livecut")
    return url, config.name


def _in_flight(app: str) -> dict[str, int]:
    from ray import serve

    out = {}
    for stage in ("llm", "tts", "render"):
        handle = serve.get_deployment_handle(stage, app_name=app)
        out[stage] = handle.health.remote().result(timeout_s=30)["in_flight"]
    return out


def test_interrupt_cancels_the_reply_in_every_stage_replica(slow_app):
    url, app = slow_app
    ws_url = url.replace("http://", "ws://") + "/v1/session"

    async def run():
        media, events = [], []
        async with websockets.connect(ws_url, max_size=2**24) as ws:
            await ws.send(json.dumps({"type": "start", "media": "binary"}))
            await ws.send(json.dumps({"type": "text", "text": "Tell me a long story."}))
            busy = None
            while True:
                message = await asyncio.wait_for(ws.recv(), timeout=60)
                if isinstance(message, bytes):
                    media.append((time.monotonic(), unpack(message)[0]))
                    if busy is None and sum(k == KIND_JPEG for _, k in media) >= 3:
                        busy = await asyncio.to_thread(_in_flight, app)
                        await ws.send(json.dumps({"type": "interrupt"}))
                    continue
                event = json.loads(message)
                events.append(event)
                if event["type"] in ("interrupted", "done", "error"):
                    break
            cut_at = time.monotonic()
            try:  # nothing more may arrive for this turn
                late = await asyncio.wait_for(ws.recv(), timeout=1.5)
            except TimeoutError:
                late = None
        await asyncio.sleep(1.0)  # a cancelled call may finish its current step
        return media, events, busy, cut_at, late

    media, events, busy, cut_at, late = asyncio.run(run())
    assert events[-1]["type"] == "interrupted", events[-1]
    assert late is None
    assert all(t <= cut_at for t, _ in media)
    assert {k for _, k in media} >= {KIND_AUDIO, KIND_JPEG}
    assert sum(busy.values()) > 0, busy  # the reply was still being produced when cut
    assert _in_flight(app) == {"llm": 0, "tts": 0, "render": 0}
