"""Bounded smoke load test: the locust runner against a fake-backend app on the shared Ray.

Loopback only, fake backends, about a minute: a spike beyond the router's capacity must come
back as fast 503s (counted apart from timeouts), and the report must carry its figures, the
SLO verdict and the plot.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import time

import pytest
from ray import serve

from deployments import ray_cluster
from loadtests.runner import RunOptions, run_loadtest
from tests.serve.conftest import fake_app_config

# Only look: importing locust here would monkey-patch the test process (and Ray) with gevent.
pytestmark = [
    pytest.mark.serve,
    pytest.mark.skipif(
        importlib.util.find_spec("locust") is None
        or importlib.util.find_spec("matplotlib") is None,
        reason="locust and matplotlib are needed (the loadtest extra)",
    ),
]


def test_a_spike_past_capacity_is_reported_as_503s_with_slo_verdict_and_plot(
    serve_instance, tmp_path
):
    port, state_dir = serve_instance
    config = fake_app_config(
        "loadsmoke",
        port,
        state_dir,
        stages={
            "asr": {"backend": "fake", "options": {"latency_s": 0.1}},
            "llm": {"backend": "fake", "options": {"ttft_s": 0.1, "per_token_s": 0.005}},
            "tts": {"backend": "fake", "options": {"latency_s": 0.05, "rtf": 0.02}},
            "render": {"backend": "fake", "options": {"width": 32, "height": 32}},
        },
        # Each open WebSocket holds a router slot: a dozen users cannot all get one.
        serve={"router": {"max_ongoing_requests": 4, "max_queued_requests": 2}},
    )
    url = ray_cluster.deploy(config, route_prefix="/loadsmoke")
    out = tmp_path / "report"
    started = time.monotonic()
    try:
        report = _run(url, config, out)
    finally:
        serve.delete("loadsmoke")  # free the shared instance for the tests after this one
    assert time.monotonic() - started < 110, "the smoke load test overran its budget"

    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["schema"] == report["schema"] == "avatar-loadtest-report/1"
    for key in (
        "machine",
        "target",
        "shape",
        "slo",
        "turns",
        "latency_s",
        "failures",
        "capacity",
        "windows",
        "replicas",
        "stage_costs",
        "per_persona",
    ):
        assert key in on_disk, key
    assert (out / "report.md").read_text().startswith("# Load test: FAIL")
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "locust_stats.csv").exists() and (out / "turns.jsonl").exists()

    turns, failures = report["turns"], report["failures"]
    assert turns["completed"] >= 5
    for name in ("ttfa", "ttff", "turn"):
        assert report["latency_s"][name]["n"] == turns["completed"]
        assert 0 < report["latency_s"][name]["p50"] <= report["latency_s"][name]["p95"]

    # Overload is a fast 503, counted apart from timeouts and other errors.
    assert failures["rejected_503"] > 0, failures
    assert failures["timeouts"] == 0, failures
    assert failures["total"] == failures["rejected_503"] + failures["timeouts"] + failures["errors"]
    assert failures["rejected_latency_s"]["p95"] < 2.0
    assert turns["attempts"] == turns["completed"] + failures["total"]
    with (out / "locust_failures.csv").open(newline="") as f:
        messages = {row["Error"] for row in csv.DictReader(f)}
    assert any("503 rejected" in m for m in messages), messages
    assert not any("timeout" in m for m in messages), messages

    # The verdict: latency met, error rate (the 503s) missed.
    checks = {c["objective"]: c for c in report["slo"]["checks"]}
    assert report["slo"]["passed"] is False
    assert checks["ttff_p95_s"]["passed"] and not checks["error_rate"]["passed"]
    assert checks["timeout_rate"]["passed"]

    # Serve figures were sampled on the shared instance: every stage's replicas over time.
    series = report["replicas"]["series"]
    assert len(series) >= 10
    assert set(report["replicas"]["summary"]) >= {"asr", "llm", "tts", "render", "router"}
    assert all(c["seconds_per_turn"] > 0 for c in report["stage_costs"].values())


def _run(url, config, out):
    """The runner against `url`: a spike to 12 users for 12 s, flat out (no speech pacing)."""
    return run_loadtest(
        RunOptions(
            out=out,
            url=url,
            app="loadsmoke",
            app_config=config,
            shape="spike:base=2,peak=12,warmup_s=8,spike_s=12,cooldown_s=8",
            think_s=(0.2, 0.5),
            realtime=False,
            warmup=False,
            sample_s=1.0,
            tail_s=3.0,
            slo_overrides={
                "ttff_p95_s": 10.0,
                "error_rate": 0.0,
                "turn_timeout_s": 30.0,
                "window_s": 10.0,
                "min_window_turns": 1,
            },
        )
    )
