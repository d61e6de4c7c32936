"""A capacity plan from what a load test measured (`loadtests.run`'s report.json).

Each stage's seconds per call and calls per turn (`stage_costs`, at the lightest load where
the report has a `baseline`), the TTFF at the lightest load, and how often a session takes a
turn (`session_cycle_s`: speak + turn + listen + think); per-replica resources come from the
report or from an `AppConfig` to plan with (e.g. the GPU config).
"""

from __future__ import annotations

from typing import Any

from loadtests.capacity import Plan, PlanError, StageCost, plan_capacity
from loadtests.stage_costs import STAGES

# Backend options that say how many cores a replica really computes on (its Ray `num_cpus`
# may be a packing hint far below that, as in the 2-core local config).
THREAD_OPTIONS = ("cpu_threads", "n_threads", "num_threads", "threads")


def costs_from_report(
    report: dict[str, Any],
    *,
    slots: dict[str, int] | None = None,
    app_config: Any = None,
    use_baseline: bool = True,
    cpus: dict[str, float] | None = None,
) -> list[StageCost]:
    """Stage costs from a load-test report; per-replica resources from it, an app config, or
    `cpus` (what a replica really computes on, where its Ray claim is only a packing hint)."""
    measured = report.get("stage_costs") or {}
    stage_options = (report.get("target") or {}).get("stage_options") or {}
    out = []
    for name in STAGES:
        entry = measured.get(name) or {}
        # Service times at the lightest load: under load they include waiting inside a
        # replica (a compute-bound backend runs one call at a time), which the queue model
        # adds itself.
        timing = entry.get("baseline") if use_baseline and entry.get("baseline") else entry
        if not timing.get("seconds_per_call") or not timing.get("calls_per_turn"):
            continue
        backend = entry.get("backend")
        cpu_claim, gpus = entry.get("num_cpus"), entry.get("num_gpus") or 0.0
        max_ongoing = entry.get("max_ongoing_requests") or 1
        options = stage_options.get(name) or {}
        if app_config is not None:
            deployment = app_config.deployment(name)
            cpu_claim = deployment.ray_actor_options.num_cpus
            gpus = deployment.ray_actor_options.num_gpus
            max_ongoing = deployment.max_ongoing_requests
            stage = app_config.stage(name)
            backend = stage.backend
            options = stage.options.model_dump()
        threads = max(
            (float(options[k]) for k in THREAD_OPTIONS if options.get(k) is not None), default=0.0
        )
        # A fake sleeps, so a replica serves all its ongoing calls at once; a model computes.
        default_slots = max_ongoing if backend == "fake" else 1
        out.append(
            StageCost(
                name=name,
                seconds_per_call=float(timing["seconds_per_call"]),
                calls_per_turn=float(timing["calls_per_turn"]),
                slots=int((slots or {}).get(name, default_slots)),
                cpus=(cpus or {}).get(
                    name, max(float(cpu_claim if cpu_claim is not None else 1.0), threads)
                ),
                gpus=float(gpus),
                backend=backend,
            )
        )
    if not out:
        raise PlanError("the report has no per-stage costs (stage_costs): run a load test first")
    return out


def plan_from_report(
    report: dict[str, Any],
    *,
    sessions: int,
    slo_ttff_s: float,
    cycle_s: float | None = None,
    quantile: float = 0.95,
    max_utilisation: float = 0.85,
    slots: dict[str, int] | None = None,
    app_config: Any = None,
    cpus: dict[str, float] | None = None,
) -> Plan:
    costs = costs_from_report(report, slots=slots, app_config=app_config, cpus=cpus)
    baseline = report.get("baseline") or {}
    key = f"ttff_p{round(quantile * 100)}_s"
    base = baseline.get(key)
    if base is None:
        base = (report.get("latency_s") or {}).get("ttff", {}).get(f"p{round(quantile * 100)}")
    if base is None:
        raise PlanError(f"the report has no baseline TTFF for quantile {quantile} ({key})")
    cycle = cycle_s or report.get("session_cycle_s")
    if not cycle:
        raise PlanError("the report has no session_cycle_s: give --turn-interval-s")
    plan = plan_capacity(
        costs,
        sessions=sessions,
        cycle_s=float(cycle),
        baseline_ttff_s=float(base),
        slo_ttff_s=slo_ttff_s,
        quantile=quantile,
        max_utilisation=max_utilisation,
    )
    missing = [s for s in STAGES if s not in {c.name for c in costs}]
    if missing:
        plan.notes.append(f"no measured cost for {', '.join(missing)}: left out of the plan")
    if baseline.get("users"):
        plan.notes.append(
            f"baseline measured at {baseline['users']} users; costs measured on "
            f"{(report.get('machine') or {}).get('cores', '?')} shared cores: scale them to the "
            "target hardware before buying it"
        )
    return plan
