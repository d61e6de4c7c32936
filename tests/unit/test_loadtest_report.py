"""The load-test report from raw material: outcomes, SLO verdicts, windows, costs, outputs.

No cluster and no locust in this process (locust monkey-patches with gevent); the command line
and the locust client are checked in test_loadtest_cli.py.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from loadtests.cluster import config_for_run, describe_target
from loadtests.errors import LoadTestError
from loadtests.paths import FAKE_CONFIG
from loadtests.prom_sampler import CounterDelta, counters_between, parse_samples
from loadtests.report import build_report, write_outputs
from loadtests.shapes import parse_shape
from loadtests.slo import Slo
from loadtests.stage_costs import stage_costs
from loadtests.stats import capacity_of, failures_of, figures_of, windows_of
from services.core.config import load_app_config

REPO = Path(__file__).resolve().parents[2]
T0 = 1_000_000.0


def ok(t1, ttff, users=2, kind="ws", persona="default", user="u1", **extra):
    return {
        "t0": t1 - ttff - 2,
        "t1": t1,
        "kind": kind,
        "persona": persona,
        "user": user,
        "phase": "turn",
        "outcome": "ok",
        "status": None,
        "error": None,
        "users": users,
        "ttfa_s": ttff - 0.05,
        "ttff_s": ttff,
        "turn_s": ttff + 2,
        "stall_s": 0.0,
        "audio_events": 3,
        **extra,
    }


def failed(t1, outcome, error, status=None, phase="turn", wait=0.05, users=2):
    return {
        "t0": t1 - wait,
        "t1": t1,
        "kind": "http",
        "persona": "default",
        "user": "u9",
        "phase": phase,
        "outcome": outcome,
        "status": status,
        "error": error,
        "users": users,
    }


SLO = Slo(
    objectives={
        "ttff_p95_s": 2.0,
        "error_rate": 0.1,
        "timeout_rate": 0.0,
        "min_completed_turns": 1,
    },
    window_s=30,
    min_window_turns=2,
)


def test_slo_file_loads_with_overrides_and_rejects_unknown_objectives(tmp_path):
    slo = Slo.load(REPO / "loadtests" / "slo.yaml", {"ttff_p95_s": 4.0, "window_s": 60})
    assert slo.objectives["ttff_p95_s"] == 4.0 and slo.window_s == 60
    assert {"error_rate", "timeout_rate"} <= set(slo.objectives)
    bad = tmp_path / "slo.yaml"
    bad.write_text("objectives: {ttff_p97_s: 1}\n")
    with pytest.raises(LoadTestError, match="unknown SLO objective 'ttff_p97_s'"):
        Slo.load(bad)
    bad.write_text("objectives: {}\nwindow: 3\n")
    with pytest.raises(LoadTestError, match="unknown keys"):
        Slo.load(bad)
    checks = {
        c["objective"]: c
        for c in SLO.check(
            {"ttff_p95_s": 2.5, "error_rate": None, "timeout_rate": 0.0, "min_completed_turns": 3}
        )
    }
    assert not checks["ttff_p95_s"]["passed"] and checks["ttff_p95_s"]["op"] == "<="
    assert not checks["error_rate"]["passed"]  # no data is not a pass
    assert checks["min_completed_turns"]["passed"] and checks["min_completed_turns"]["op"] == ">="


def test_503s_timeouts_and_errors_are_counted_apart():
    records = [ok(T0 + i, 1.0 + i / 10) for i in range(10)] + [
        failed(T0 + 3, "rejected", "503 rejected (HTTP)", 503),
        failed(T0 + 4, "rejected", "503 rejected (turn)", 503, wait=0.2),
        failed(T0 + 5, "timeout", "timeout after 60 s (turn)", wait=60),
        failed(T0 + 6, "error", "error 500 (connect)", 500, phase="connect"),
    ]
    figures = figures_of(records, span_s=60)
    assert (
        figures["completed"],
        figures["rejected_503"],
        figures["timeouts"],
        figures["errors"],
    ) == (10, 2, 1, 1)
    assert figures["error_rate"] == pytest.approx(4 / 14)
    assert figures["timeout_rate"] == pytest.approx(1 / 14)
    assert figures["turns_per_min"] == 10.0
    assert figures["ttff_p50_s"] == pytest.approx(
        np.percentile([1 + i / 10 for i in range(10)], 50)
    )
    assert figures["ttff_p95_s"] == pytest.approx(
        np.percentile([1 + i / 10 for i in range(10)], 95)
    )
    fail = failures_of(records)
    assert (fail["total"], fail["rejected_503"], fail["timeouts"], fail["errors"]) == (4, 2, 1, 1)
    # A 503 is answered fast; the 60 s wait belongs to the timeout, not to the rejections.
    assert fail["rejected_latency_s"]["max"] == pytest.approx(0.2)
    assert fail["rejected_at"] == {"connect": 0, "before_reply": 2, "mid_reply": 0}
    assert fail["by_error"]["503 rejected (HTTP)"] == 1


def test_windows_find_the_most_turns_sustained_within_the_slo():
    history = [(T0 + t, 2 if t < 30 else 8 if t < 60 else 16) for t in range(90)]
    records = (
        [ok(T0 + 1 + 3 * i, 1.0, users=2) for i in range(10)]  # 20 turns/min, fast
        + [ok(T0 + 31 + 1.5 * i, 1.5, users=8) for i in range(20)]  # 40 turns/min, in SLO
        + [ok(T0 + 61 + i, 3.0, users=16) for i in range(29)]  # 58 turns/min, too slow
        + [failed(T0 + 70 + i, "rejected", "503 rejected (HTTP)", 503) for i in range(5)]
    )
    windows = windows_of(records, history, T0, T0 + 90, SLO)
    assert [w["users"] for w in windows] == [2, 8, 16]
    assert [w["turns_per_min"] for w in windows] == [20.0, 40.0, 58.0]
    assert [w["within_slo"] for w in windows] == [True, True, False]
    assert set(windows[2]["failed_objectives"]) == {"ttff_p95_s", "error_rate"}
    capacity = capacity_of(windows)
    assert capacity["max_sustained_turns_per_min_within_slo"] == 40.0
    assert capacity["at_users"] == 8 and capacity["peak_turns_per_min_any"] == 58.0
    # Too few turns in a window is not evidence of anything.
    sparse = windows_of(records[:1], history[:30], T0, T0 + 30, SLO)
    assert not sparse[0]["within_slo"] and "min_window_turns" in sparse[0]["failed_objectives"]


def test_prometheus_text_parsing_and_counter_deltas_survive_replica_churn():
    text = textwrap.dedent("""\
        # HELP ray_avatar_stage_latency_seconds_sum x
        ray_avatar_stage_latency_seconds_sum{application="a",stage="tts",WorkerId="w1"} 2.5
        ray_avatar_stage_latency_seconds_sum{application="b",stage="tts",WorkerId="w9"} 99
        ray_avatar_stage_latency_seconds_count{application="a",stage="tts",WorkerId="w1"} 5
        ray_avatar_stage_latency_seconds_bucket{application="a",stage="tts",le="1"} 5
        ray_serve_deployment_queued_queries{application="a",deployment="tts",x="a\\"b"} 3.0
    """)
    names = ("ray_avatar_stage_latency_seconds_sum", "ray_serve_deployment_queued_queries")
    samples = parse_samples(text, names)
    assert [(n, lab.get("application"), v) for n, lab, v in samples] == [
        ("ray_avatar_stage_latency_seconds_sum", "a", 2.5),
        ("ray_avatar_stage_latency_seconds_sum", "b", 99.0),
        ("ray_serve_deployment_queued_queries", "a", 3.0),
    ]
    delta = CounterDelta()
    delta.update({("stage_calls", "tts", "w1"): 5.0})
    delta.update({("stage_calls", "tts", "w1"): 9.0, ("stage_calls", "tts", "w2"): 4.0})
    delta.update({("stage_calls", "tts", "w2"): 6.0})  # w1 scaled away: its last value stays
    assert delta.totals() == {"stage_calls": {"tts": 10.0}}


def test_counters_between_two_times_read_late_by_the_export_lag():
    series = [
        (T0 + 10, {"stage_calls": {"tts": 3.0}}),
        (T0 + 20, {"stage_calls": {"tts": 9.0}, "turns": {"all": 2.0}}),
        (T0 + 30, {"stage_calls": {"tts": 30.0}, "turns": {"all": 9.0}}),
    ]
    assert counters_between(series, T0 + 10, T0 + 20) == {
        "stage_calls": {"tts": 6.0},
        "turns": {"all": 2.0},
    }
    assert counters_between(series, T0 + 5, T0 + 18, lag_s=2) == {
        "stage_calls": {"tts": 9.0},
        "turns": {"all": 2.0},
    }
    assert counters_between([], T0, T0 + 1) == {}


def test_stage_costs_prefer_replica_metrics_and_fall_back_to_turn_timings():
    server = {"asr_s": 0.8, "llm_done_s": 2.0, "tts_s": 1.2, "render_s": 3.0}
    records = [ok(T0 + i, 1.5, server=server) for i in range(4)]
    deployments = {
        "tts": {"max_ongoing_requests": 4, "ray_actor_options": {"num_cpus": 0.5, "num_gpus": 0.0}}
    }
    counters = {"turns": {"all": 4.0}, "stage_calls": {"tts": 12.0}, "stage_seconds": {"tts": 6.0}}
    costs = stage_costs(records, counters, deployments, {"tts": "piper"})
    assert costs["tts"]["source"] == "ray_metrics"
    assert costs["tts"]["seconds_per_call"] == 0.5 and costs["tts"]["calls_per_turn"] == 3
    assert costs["tts"]["seconds_per_turn"] == 1.5 and costs["tts"]["num_cpus"] == 0.5
    assert costs["tts"]["router_seconds_per_turn"] == 1.2
    assert costs["llm"]["source"] == "turn_timings"
    assert costs["llm"]["seconds_per_turn"] == pytest.approx(1.2)  # llm_done - asr
    assert costs["render"]["seconds_per_call"] == 1.0 and costs["render"]["calls_per_turn"] == 3


def test_a_report_is_written_as_json_markdown_and_png(tmp_path):
    history = [(T0 + t, 2 if t < 30 else 6) for t in range(60)]
    records = (
        [ok(T0 + 2 * i + 1, 1.2, users=2, user=f"u{i % 2}") for i in range(15)]
        + [ok(T0 + 31 + i, 2.6, users=6, persona="maya", user=f"m{i % 3}") for i in range(29)]
        + [
            failed(T0 + 40, "rejected", "503 rejected (HTTP)", 503),
            failed(T0 + 41, "error", "error 500 (connect)", 500, phase="connect"),
        ]
    )
    samples = [
        {
            "t": T0 + t,
            "replicas": {"asr": 1, "llm": 1, "tts": 1 + (t > 35), "render": 1, "router": 1},
            "queued": {"tts": float(t > 35)},
            "ongoing": {"tts": 2.0},
        }
        for t in range(0, 60, 2)
    ]
    # Light first step (2 users): a TTS call takes 0.4 s; loaded second step: 1.0 s.
    series = [
        (
            T0 + 1,
            {"stage_calls": {"tts": 0.0}, "stage_seconds": {"tts": 0.0}, "turns": {"all": 0.0}},
        ),
        (
            T0 + 30,
            {"stage_calls": {"tts": 45.0}, "stage_seconds": {"tts": 18.0}, "turns": {"all": 15.0}},
        ),
        (
            T0 + 60,
            {
                "stage_calls": {"tts": 132.0},
                "stage_seconds": {"tts": 105.0},
                "turns": {"all": 44.0},
            },
        ),
    ]
    report = build_report(
        records=records,
        history=history,
        samples=samples,
        counters=series[-1][1],
        counter_series=series,
        slo=SLO,
        shape=parse_shape("step:start=2,step=4,steps=2,step_s=30"),
        t_start=T0,
        t_end=T0 + 60,
        target={"url": "http://127.0.0.1:1", "app": "x", "backends": {"asr": "fake"}},
        run={"personas": ["default", "maya"]},
    )
    write_outputs(report, tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["schema"] == "avatar-loadtest-report/1"
    # 2 failures in 46 attempts is within the 10% error budget; the slow second step is not.
    assert data["slo"]["passed"] is False
    assert {c["objective"] for c in data["slo"]["checks"] if not c["passed"]} == {"ttff_p95_s"}
    assert data["capacity"]["max_sustained_turns_per_min_within_slo"] == 30.0
    assert data["capacity"]["at_users"] == 2
    assert data["baseline"]["users"] == 2 and data["baseline"]["ttff_p95_s"] == pytest.approx(1.2)
    # Median gap between one user's turns: 4 s for the two default users, 3 s for the three
    # maya users (who took more of the turns).
    assert data["session_cycle_s"] == pytest.approx(3.0)
    assert set(data["per_persona"]) == {"default", "maya"}
    assert data["replicas"]["summary"]["tts"] == {
        "start": 1,
        "max": 2,
        "end": 2,
        "scaled_up": True,
        "scaled_down_after_peak": False,
        "max_queued": 1,
        "max_ongoing": 2,
    }
    assert any("HTTP 500, not 503" in n for n in data["notes"])
    tts = data["stage_costs"]["tts"]
    assert tts["seconds_per_call"] == pytest.approx(105 / 132, abs=1e-3)
    assert tts["baseline"]["seconds_per_call"] == pytest.approx(0.4)
    assert tts["baseline"]["calls_per_turn"] == 3 and tts["baseline"]["users"] == 2
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.startswith("# Load test: FAIL") and "| ttff_p95_s | <= 2 |" in markdown
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_the_target_is_described_from_the_app_config_and_runs_on_one_sqlite_file(tmp_path):
    config = load_app_config(FAKE_CONFIG)
    target = describe_target(config)
    assert target["backends"] == {s: "fake" for s in ("asr", "llm", "tts", "render")}
    assert set(target["deployments"]) == {"asr", "llm", "tts", "render", "router"}
    assert target["deployments"]["router"]["max_ongoing_requests"] == 200
    assert target["deployments"]["asr"]["ray_actor_options"] == {"num_cpus": 0.1, "num_gpus": 0.0}
    assert target["stage_options"]["asr"]["latency_s"] == 0.7
    json.dumps(target)  # it goes into report.json as it is
    assert describe_target(None) == {"backends": None, "deployments": None, "stage_options": None}
    run = config_for_run(config, tmp_path, port=8123)
    assert run.storage.sqlite_path == str(tmp_path / "avatar.sqlite3")
    assert (run.http.host, run.http.port) == ("127.0.0.1", 8123)
    assert config_for_run(config, tmp_path).http.port == config.http.port
    assert run.stage("llm") == config.stage("llm")
