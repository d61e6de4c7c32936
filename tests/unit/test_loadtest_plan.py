"""Capacity planner math: Erlang C, wait quantiles, replica choice, and the report reader."""

from __future__ import annotations

import json
import math

import pytest

from loadtests.capacity import PlanError, StageCost, format_plan, plan_capacity
from loadtests.paths import FAKE_CONFIG, LOCAL_CONFIG
from loadtests.plan import main
from loadtests.plan_report import costs_from_report, plan_from_report
from loadtests.queueing import erlang_c, wait_quantile
from services.core.config import load_app_config


def test_erlang_c_matches_closed_forms():
    # M/M/1: a call waits with probability rho.
    assert erlang_c(1, 0.5) == pytest.approx(0.5)
    # M/M/2 at a = 1: C = a^2 / (a^2 + 2 (2 - a)) ... = 1/3.
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(4, 0.0) == 0.0
    assert erlang_c(3, 3.0) == 1.0 and erlang_c(3, 5.0) == 1.0  # unstable
    # Stable for large systems, and more servers at the same load never wait more.
    values = [erlang_c(c, 900.0) for c in (901, 920, 950, 1000)]
    assert all(0 <= v <= 1 for v in values) and values == sorted(values, reverse=True)


def test_wait_quantile_of_an_mm1_queue():
    # P(W > t) = rho * exp(-(1 - rho) t / S): at rho 0.5, S 1 s, p95 = 2 ln 10.
    assert wait_quantile(1, 0.5, 1.0, 0.95) == pytest.approx(2 * math.log(10))
    assert wait_quantile(1, 0.5, 2.0, 0.95) == pytest.approx(4 * math.log(10))
    # Waiting less often than 1 - q: the quantile is no wait at all.
    assert wait_quantile(10, 1.0, 1.0, 0.95) == 0.0
    assert wait_quantile(2, 2.0, 1.0, 0.95) == math.inf
    assert wait_quantile(2, 0.0, 1.0, 0.95) == 0.0


COSTS = [
    StageCost("asr", seconds_per_call=0.8, calls_per_turn=1, cpus=2),
    StageCost("llm", seconds_per_call=1.5, calls_per_turn=1, cpus=2),
    StageCost("tts", seconds_per_call=0.4, calls_per_turn=3, cpus=1),
    StageCost("render", seconds_per_call=1.0, calls_per_turn=3, cpus=1, gpus=0.25),
]


def test_replicas_cover_the_load_under_the_utilisation_cap_and_meet_the_slo():
    plan = plan_capacity(COSTS, sessions=60, cycle_s=20, baseline_ttff_s=1.5, slo_ttff_s=2.5)
    by = {s.name: s for s in plan.stages}
    assert plan.turns_per_s == 3.0
    # Offered load in busy servers: turns/s x seconds of stage work per turn.
    assert by["render"].load_erlangs == pytest.approx(9.0)
    assert by["asr"].load_erlangs == pytest.approx(2.4)
    assert all(s.utilisation <= 0.85 for s in plan.stages)
    assert plan.feasible and plan.predicted_ttff_s <= 2.5
    waits = sum(s.wait_q_s for s in plan.stages)
    assert plan.predicted_ttff_s == pytest.approx(1.5 + waits, abs=1e-3)
    assert by["render"].gpus == pytest.approx(by["render"].replicas * 0.25)
    assert plan.totals["cpus"] == pytest.approx(sum(s.cpus for s in plan.stages))


def test_more_sessions_never_need_fewer_replicas():
    totals = [
        plan_capacity(COSTS, sessions=n, cycle_s=20, baseline_ttff_s=1.5, slo_ttff_s=2.0).totals[
            "replicas"
        ]
        for n in (1, 10, 50, 200, 1000)
    ]
    # Even one session's turns can queue behind each other at p95: a few spare replicas.
    assert totals == sorted(totals) and 4 <= totals[0] <= 8 and totals[-1] > 100


def test_a_tighter_slo_buys_replicas_where_the_queue_is():
    loose = plan_capacity(COSTS, sessions=40, cycle_s=20, baseline_ttff_s=1.5, slo_ttff_s=10)
    tight = plan_capacity(COSTS, sessions=40, cycle_s=20, baseline_ttff_s=1.5, slo_ttff_s=1.6)
    assert tight.totals["replicas"] > loose.totals["replicas"]
    assert tight.predicted_ttff_s <= 1.6 < loose.predicted_ttff_s


def test_slots_per_replica_divide_the_replicas_needed():
    one = plan_capacity(COSTS[:1], sessions=100, cycle_s=10, baseline_ttff_s=1, slo_ttff_s=5)
    four = plan_capacity(
        [StageCost("asr", 0.8, 1, slots=4)],
        sessions=100,
        cycle_s=10,
        baseline_ttff_s=1,
        slo_ttff_s=5,
    )
    assert one.stages[0].replicas >= 4 * four.stages[0].replicas - 3


def test_an_slo_below_the_baseline_is_infeasible_and_says_why():
    plan = plan_capacity(COSTS, sessions=10, cycle_s=20, baseline_ttff_s=2.0, slo_ttff_s=1.0)
    assert not plan.feasible
    assert "more replicas cannot help" in plan.notes[0]
    assert all(s.replicas >= 1 and s.utilisation <= 0.85 for s in plan.stages)


@pytest.mark.parametrize(
    "kwargs",
    [{"sessions": 0}, {"cycle_s": 0}, {"slo_ttff_s": 0}, {"quantile": 1.0}, {"max_utilisation": 0}],
)
def test_bad_inputs_are_refused(kwargs):
    args = {"sessions": 5, "cycle_s": 10, "baseline_ttff_s": 1, "slo_ttff_s": 2, **kwargs}
    with pytest.raises(PlanError):
        plan_capacity(COSTS, **args)


def report(**extra):
    base = {
        "machine": {"cores": 2},
        "baseline": {"users": 1, "ttff_p95_s": 1.8},
        "session_cycle_s": 25.0,
        "latency_s": {"ttff": {"p95": 2.2}},
        "target": {"stage_options": {"asr": {"cpu_threads": 2}, "llm": {"n_threads": 2}}},
        "stage_costs": {
            "asr": {
                "seconds_per_call": 0.8,
                "calls_per_turn": 1,
                "backend": "whisper",
                "num_cpus": 0.2,
                "num_gpus": 0.0,
                "max_ongoing_requests": 4,
            },
            "llm": {
                "seconds_per_call": 1.6,
                "calls_per_turn": 1,
                "backend": "llama_cpp",
                "num_cpus": 0.2,
                "num_gpus": 0.0,
                "max_ongoing_requests": 4,
            },
            "tts": {
                "seconds_per_call": 0.5,
                "calls_per_turn": 3,
                "backend": "fake",
                "num_cpus": 0.1,
                "num_gpus": 0.0,
                "max_ongoing_requests": 6,
            },
            "render": {},
        },
    }
    base.update(extra)
    return base


def test_costs_from_a_report_use_threads_and_fake_slots():
    costs = {c.name: c for c in costs_from_report(report())}
    assert set(costs) == {"asr", "llm", "tts"}  # render measured nothing
    # A real model computes on its threads whatever its Ray CPU claim says; a fake sleeps.
    assert costs["asr"].cpus == 2 and costs["asr"].slots == 1
    assert costs["tts"].slots == 6 and costs["tts"].cpus == pytest.approx(0.1)
    assert costs_from_report(report(), slots={"asr": 3})[0].slots == 3
    assert costs_from_report(report(), cpus={"tts": 1.5})[2].cpus == 1.5


def test_costs_take_backends_and_replica_resources_from_an_app_config():
    config = load_app_config(FAKE_CONFIG)
    costs = {c.name: c for c in costs_from_report(report(), app_config=config)}
    # The config's stages win over the report's: all fakes, each serving max_ongoing at once.
    assert {c.backend for c in costs.values()} == {"fake"}
    assert costs["asr"].slots == 4 and costs["asr"].cpus == pytest.approx(0.1)
    assert costs["llm"].gpus == 0.0
    # A real backend computes on its threads (typed options carry the backend's defaults).
    local = load_app_config(LOCAL_CONFIG)
    costs = {c.name: c for c in costs_from_report(report(), app_config=local)}
    assert costs["asr"].backend == "whisper" and costs["asr"].slots == 1
    assert costs["asr"].cpus == 2 and costs["llm"].cpus == 2 and costs["tts"].cpus == 0.2


def test_plan_from_a_report_notes_what_is_missing():
    plan = plan_from_report(report(), sessions=20, slo_ttff_s=3.0)
    assert plan.cycle_s == 25.0 and plan.baseline_ttff_s == 1.8
    assert any("no measured cost for render" in n for n in plan.notes)
    assert plan.feasible
    text = format_plan(plan, "r.json")
    assert "capacity plan: 20 sessions" in text and "meets the objective" in text
    with pytest.raises(PlanError, match="no per-stage costs"):
        plan_from_report(report(stage_costs={}), sessions=1, slo_ttff_s=3)
    with pytest.raises(PlanError, match="session_cycle_s"):
        plan_from_report(report(session_cycle_s=None), sessions=1, slo_ttff_s=3)


def test_the_command_prints_a_plan_and_exits_by_feasibility(tmp_path, capsys):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report()))
    assert main(["--report", str(path), "--sessions", "30", "--slo-ttff-ms", "3000"]) == 0
    assert "predicted TTFF p95" in capsys.readouterr().out
    assert main(["--report", str(path), "--sessions", "30", "--slo-ttff-ms", "1000", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["feasible"] is False and data["totals"]["replicas"] >= 3
    assert (
        main(["--report", str(tmp_path / "none.json"), "--sessions", "1", "--slo-ttff-ms", "1"])
        == 2
    )
