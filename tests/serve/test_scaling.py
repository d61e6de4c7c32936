"""Autoscaling and overload on a real local Ray Serve instance (fake backends with latency)."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest

from deployments import ray_cluster
from tests.serve.conftest import fake_app_config

pytestmark = pytest.mark.serve


def running_replicas(app: str, deployment: str) -> int:
    from ray import serve

    status = serve.status().applications[app].deployments[deployment]
    return status.replica_states.get("RUNNING", 0)


def one_turn(url: str) -> int:
    with httpx.stream("POST", f"{url}/v1/turn", json={"text": "hi"}, timeout=60) as response:
        for _ in response.iter_lines():
            pass
        return response.status_code


def test_a_stage_scales_up_under_load_and_back_down(serve_instance):
    port, state_dir = serve_instance
    fast = {"upscale_delay_s": 0.5, "downscale_delay_s": 3, "look_back_period_s": 1.0}  # fmt: skip
    config = fake_app_config(
        "scaling",
        port,
        state_dir,
        stages={"tts": {"backend": "fake", "options": {"latency_s": 0.4}}},
        serve={
            "tts": {
                "autoscaling_config": {
                    "min_replicas": 1,
                    "max_replicas": 3,
                    "target_ongoing_requests": 1,
                    **fast,
                },  # fmt: skip
                "max_ongoing_requests": 2,
                "max_queued_requests": -1,
            },
            "router": {"max_ongoing_requests": 64, "max_queued_requests": -1},
        },
        # Admit more turns than tts takes at once: the queue is what makes it scale up.
        limits={"max_turns_in_flight": 16},
    )
    url = ray_cluster.deploy(config, route_prefix="/scaling")
    assert running_replicas("scaling", "tts") == 1

    peak = 1
    deadline = time.monotonic() + 60
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        while time.monotonic() < deadline and peak < 2:
            futures = [pool.submit(one_turn, url) for _ in range(8)]
            while not all(f.done() for f in futures):
                peak = max(peak, running_replicas("scaling", "tts"))
                time.sleep(0.2)
            assert all(f.result() == 200 for f in futures)
    assert peak >= 2, "tts never scaled above its minimum under 8 concurrent turns"

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and running_replicas("scaling", "tts") > 1:
        time.sleep(0.5)
    assert running_replicas("scaling", "tts") == 1, "tts did not scale back down when idle"


def test_overload_beyond_the_queue_is_a_fast_503(serve_instance):
    port, state_dir = serve_instance
    config = fake_app_config(
        "overload",
        port,
        state_dir,
        stages={"llm": {"backend": "fake", "options": {"ttft_s": 3.0}}},
        serve={"router": {"max_ongoing_requests": 1, "max_queued_requests": 1}},
    )
    url = ray_cluster.deploy(config, route_prefix="/overload")

    def timed_turn():
        start = time.monotonic()
        status = one_turn(url)
        return status, time.monotonic() - start

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda _: timed_turn(), range(6)))
    statuses = [status for status, _ in results]
    assert statuses.count(200) >= 1
    rejected = [elapsed for status, elapsed in results if status == 503]
    assert rejected, f"no request was rejected: {statuses}"
    assert max(rejected) < 2.0, f"rejections were slow: {rejected}"
    assert set(statuses) <= {200, 503}
