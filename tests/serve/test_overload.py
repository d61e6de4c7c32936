"""Overload on a real local Ray Serve app sized for 4 concurrent turns (fake backends): of 40
simultaneous turns every one beyond what the stages can take is refused at admission (HTTP 503
with Retry-After, before anything streams), and no admitted turn fails mid-stream. The latency
of those refusals is reported by `loadtests/bench_overload.py`, not asserted here."""

from __future__ import annotations

import pytest
from ray import serve

from deployments import ray_cluster
from loadtests.bench_overload import SLOTS, overload, overload_config

pytestmark = pytest.mark.serve


def test_40_turns_at_a_cluster_for_4_are_refused_at_the_start_never_mid_stream(serve_instance):
    port, state_dir = serve_instance
    url = ray_cluster.deploy(overload_config("overload4", port, state_dir), route_prefix="/ov4")
    try:
        result = overload(url, 40)
    finally:
        serve.delete("overload4")  # free the shared instance for the tests after this one
    assert result["other_statuses"] == [], result
    assert result["admitted"] + result["rejected"] == 40, result
    assert result["mid_stream_failures"] == 0, result
    assert result["completed"] == result["admitted"] >= SLOTS, result
    # Turns last seconds and all 40 arrive together: only a few can be admitted.
    assert result["rejected"] >= 40 - 3 * SLOTS, result
    assert result["rejected_with_retry_after"] == result["rejected"], result
