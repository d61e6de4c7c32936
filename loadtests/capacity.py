"""Replicas per stage for N sessions within a TTFF objective: the capacity planner's model.

Per stage, the replicas are an M/M/c queue (`loadtests.queueing`):

  turns/s        lambda = sessions / cycle_s
  offered load   a = lambda * calls_per_turn * seconds_per_call     (busy servers, Erlangs)
  servers        c = replicas * slots  (slots: calls one replica serves at once without slowing
                 down: 1 for a compute-bound model, max_ongoing_requests for the sleeping fakes)
  wait quantile  P(W > t) = ErlangC(c, a) * exp(-(c - a) t / seconds_per_call)

and the predicted TTFF_q = baseline TTFF_q + the q-quantile wait of each stage on the first
frame's path (one call each of ASR, LLM, TTS, render; adding quantiles over-estimates, which is
the safe side). Replicas start at the fewest that keep every stage under `max_utilisation` and
are added one at a time where they cut the predicted TTFF most, until it meets the objective.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from loadtests.queueing import wait_quantile

# Bounds the replica search, so an objective no replica count meets still ends.
MAX_REPLICAS = 10_000


class PlanError(ValueError):
    """The report lacks what a plan needs, or the request is out of range."""


@dataclass
class StageCost:
    """One stage as the load test measured it, and what a replica of it reserves."""

    name: str
    seconds_per_call: float
    calls_per_turn: float
    slots: int = 1
    cpus: float = 1.0
    gpus: float = 0.0
    backend: str | None = None

    @property
    def seconds_per_turn(self) -> float:
        return self.seconds_per_call * self.calls_per_turn


@dataclass
class StagePlan:
    name: str
    replicas: int
    load_erlangs: float
    utilisation: float
    wait_q_s: float
    cpus: float
    gpus: float
    slots: int
    seconds_per_call: float
    calls_per_turn: float


@dataclass
class Plan:
    sessions: int
    cycle_s: float
    turns_per_s: float
    quantile: float
    slo_ttff_s: float
    baseline_ttff_s: float
    predicted_ttff_s: float
    feasible: bool
    stages: list[StagePlan] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, float]:
        return {
            "replicas": sum(s.replicas for s in self.stages),
            "cpus": round(sum(s.cpus for s in self.stages), 2),
            "gpus": round(sum(s.gpus for s in self.stages), 2),
        }

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "totals": self.totals}
        for stage in data["stages"]:
            if math.isinf(stage["wait_q_s"]):
                stage["wait_q_s"] = None  # JSON has no infinity: an unstable queue
        return data


def _stage_plan(cost: StageCost, replicas: int, turns_per_s: float, q: float) -> StagePlan:
    load = turns_per_s * cost.seconds_per_turn
    servers = replicas * cost.slots
    return StagePlan(
        name=cost.name,
        replicas=replicas,
        load_erlangs=round(load, 4),
        utilisation=round(load / servers, 4),
        wait_q_s=wait_quantile(servers, load, cost.seconds_per_call, q),
        cpus=round(replicas * cost.cpus, 3),
        gpus=round(replicas * cost.gpus, 3),
        slots=cost.slots,
        seconds_per_call=cost.seconds_per_call,
        calls_per_turn=cost.calls_per_turn,
    )


def plan_capacity(
    costs: list[StageCost],
    *,
    sessions: int,
    cycle_s: float,
    baseline_ttff_s: float,
    slo_ttff_s: float,
    quantile: float = 0.95,
    max_utilisation: float = 0.85,
    min_replicas: int = 1,
) -> Plan:
    """Fewest replicas per stage whose predicted TTFF quantile meets `slo_ttff_s`."""
    if sessions < 1 or cycle_s <= 0 or slo_ttff_s <= 0 or baseline_ttff_s < 0:
        raise PlanError("sessions >= 1, cycle_s > 0, slo_ttff_s > 0 and baseline >= 0 please")
    if not 0 < quantile < 1 or not 0 < max_utilisation <= 1:
        raise PlanError("quantile in (0, 1) and max_utilisation in (0, 1] please")
    turns_per_s = sessions / cycle_s
    replicas: dict[str, int] = {}
    for cost in costs:
        load = turns_per_s * cost.seconds_per_turn
        # Stable and under the utilisation cap: a queue near 100% busy has unbounded waits.
        replicas[cost.name] = max(min_replicas, math.ceil(load / (cost.slots * max_utilisation)))

    def stage_plans() -> list[StagePlan]:
        return [_stage_plan(c, replicas[c.name], turns_per_s, quantile) for c in costs]

    def predicted(plans: list[StagePlan]) -> float:
        return baseline_ttff_s + sum(p.wait_q_s for p in plans)

    plans = stage_plans()
    # Below the baseline no replica count helps: keep the utilisation-capped plan then.
    reachable = baseline_ttff_s <= slo_ttff_s
    while reachable and predicted(plans) > slo_ttff_s and sum(replicas.values()) < MAX_REPLICAS:
        # One more replica where it cuts the predicted TTFF most.
        best, best_gain = None, 0.0
        for cost, current in zip(costs, plans, strict=True):
            trial = _stage_plan(cost, replicas[cost.name] + 1, turns_per_s, quantile)
            gain = current.wait_q_s - trial.wait_q_s
            if gain > best_gain:
                best, best_gain = cost.name, gain
        if best is None:
            break  # no stage waits any more: what is left is the baseline itself
        replicas[best] += 1
        plans = stage_plans()
    ttff = predicted(plans)
    plan = Plan(
        sessions=sessions,
        cycle_s=cycle_s,
        turns_per_s=round(turns_per_s, 4),
        quantile=quantile,
        slo_ttff_s=slo_ttff_s,
        baseline_ttff_s=baseline_ttff_s,
        predicted_ttff_s=round(ttff, 4),
        feasible=ttff <= slo_ttff_s,
        stages=plans,
    )
    if baseline_ttff_s > slo_ttff_s:
        plan.notes.append(
            f"the unloaded TTFF p{quantile * 100:g} ({baseline_ttff_s:.2f} s) already exceeds the "
            f"objective ({slo_ttff_s:.2f} s): more replicas cannot help; faster stages can"
        )
    return plan


def format_plan(plan: Plan, source: str = "") -> str:
    q = f"p{plan.quantile * 100:g}"
    lines = [
        f"capacity plan: {plan.sessions} sessions, a turn every {plan.cycle_s:.1f} s each "
        f"({plan.turns_per_s * 60:.1f} turns/min), TTFF {q} <= {plan.slo_ttff_s:.2f} s"
        + (f"  [costs from {source}]" if source else ""),
        "",
        f"{'stage':<7} {'s/call':>7} {'calls/turn':>10} {'load':>7} {'slots':>5} "
        f"{'replicas':>8} {'util':>6} {'wait ' + q:>9} {'CPUs':>6} {'GPUs':>6}",
    ]
    for s in plan.stages:
        wait = "inf" if math.isinf(s.wait_q_s) else f"{s.wait_q_s:.3f}s"
        lines.append(
            f"{s.name:<7} {s.seconds_per_call:>7.3f} {s.calls_per_turn:>10.2f} "
            f"{s.load_erlangs:>7.2f} {s.slots:>5} {s.replicas:>8} {s.utilisation:>6.0%} "
            f"{wait:>9} {s.cpus:>6.1f} {s.gpus:>6.2f}"
        )
    t = plan.totals
    lines.append(
        f"{'total':<7} {'':>7} {'':>10} {'':>7} {'':>5} {t['replicas']:>8} {'':>6} {'':>9} "
        f"{t['cpus']:>6.1f} {t['gpus']:>6.2f}"
    )
    verdict = "meets" if plan.feasible else "MISSES"
    lines += [
        "",
        f"predicted TTFF {q}: {plan.predicted_ttff_s:.2f} s (baseline {plan.baseline_ttff_s:.2f} s"
        f" + queueing {plan.predicted_ttff_s - plan.baseline_ttff_s:.2f} s): {verdict} the "
        "objective",
    ]
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines)
