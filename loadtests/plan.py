"""Capacity planner: replicas and CPUs/GPUs per stage for N sessions within a TTFF objective.

It reads what a load test measured (`loadtests.run`'s report.json): each stage's seconds per
call and calls per turn (`stage_costs`), the time-to-first-frame at the lightest load
(`baseline`) and how often a session takes a turn (`session_cycle_s`: speak + turn + listen +
think). Then, per stage, it treats the replicas as an M/M/c queue:

  turns/s        lambda = sessions / cycle_s
  offered load   a = lambda * calls_per_turn * seconds_per_call     (busy servers, Erlangs)
  servers        c = replicas * slots  (slots: calls one replica serves at once without slowing
                 down: 1 for a compute-bound model, max_ongoing_requests for the sleeping fakes)
  wait quantile  P(W > t) = ErlangC(c, a) * exp(-(c - a) t / seconds_per_call)

and predicts TTFF_q = baseline TTFF_q + the q-quantile wait of each stage on the first frame's
path (one call each of ASR, LLM, TTS, render; adding quantiles over-estimates, which is the
safe side). Replicas start at the fewest that keep every stage under `--max-utilisation` and
are added one at a time where they cut the predicted TTFF most, until it meets the objective.

    avatar plan --report /tmp/loadtest-reports/fake/report.json --sessions 200 --slo-ttff-ms 2500
    python -m loadtests.plan --report R.json --sessions 20 --slo-ttff-ms 3000 --config gpu.yaml

No replica count brings TTFF under the unloaded baseline: then the plan says so (exit 1) and
the answer is faster stages (a GPU, a smaller model, a shorter first sentence), not more of them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STAGES = ("asr", "llm", "tts", "render")
DEFAULT_REPORT = Path("/tmp/loadtest-reports/latest/report.json")
# Backend options that say how many cores a replica really computes on (its Ray `num_cpus`
# may be a packing hint far below that, as in the 2-core local config).
THREAD_OPTIONS = ("cpu_threads", "n_threads", "num_threads", "threads")
MAX_REPLICAS = 10_000


class PlanError(ValueError):
    """The report lacks what a plan needs, or the request is out of range."""


def erlang_c(servers: int, load: float) -> float:
    """Probability that a call waits in an M/M/c queue (1.0 when the queue is unstable)."""
    if load <= 0:
        return 0.0
    if servers <= load:
        return 1.0
    # Erlang B by its recursion (stable for thousands of servers), then C from B.
    b = 1.0
    for k in range(1, servers + 1):
        b = load * b / (k + load * b)
    return servers * b / (servers - load * (1.0 - b))


def wait_quantile(servers: int, load: float, service_s: float, q: float) -> float:
    """The q-quantile of the time a call waits for a free server (inf when unstable)."""
    if load <= 0:
        return 0.0
    if servers <= load:
        return math.inf
    waits = erlang_c(servers, load)
    if waits <= 1.0 - q:
        return 0.0
    return service_s / (servers - load) * math.log(waits / (1.0 - q))


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
            deployment = app_config.deployments[name]
            cpu_claim = deployment.ray_actor_options.num_cpus
            gpus = deployment.ray_actor_options.num_gpus
            max_ongoing = deployment.max_ongoing_requests
            backend = app_config.pipeline.stage(name).backend
            options = app_config.pipeline.stage(name).options
        threads = max((float(options[k]) for k in THREAD_OPTIONS if k in options), default=0.0)
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


def _per_stage(items: list[str] | None, option: str) -> dict[str, float]:
    out = {}
    for item in items or []:
        stage, _, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if stage not in STAGES or number <= 0:
            raise PlanError(f"{option} wants STAGE=N (N > 0, stage one of {STAGES}), got {item!r}")
        out[stage] = number
    return out


def _add_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--sessions", type=int, required=True, help="concurrent sessions to serve")
    cmd.add_argument("--slo-ttff-ms", type=float, required=True, help="TTFF objective (ms)")
    cmd.add_argument(
        "--report",
        type=Path,
        default=DEFAULT_REPORT,
        help=f"load-test report.json with measured costs (default {DEFAULT_REPORT})",
    )
    cmd.add_argument("--quantile", type=float, default=0.95, help="TTFF quantile (0.95)")
    cmd.add_argument(
        "--turn-interval-s",
        type=float,
        help="seconds between one session's turns (default: measured)",
    )
    cmd.add_argument(
        "--max-utilisation", type=float, default=0.85, help="busiest a stage may run (0.85)"
    )
    cmd.add_argument(
        "--slots",
        action="append",
        metavar="STAGE=N",
        help="calls one replica serves at once (default 1; fakes: max_ongoing)",
    )
    cmd.add_argument(
        "--cpus",
        action="append",
        metavar="STAGE=N",
        help="CPUs one replica really computes on (default: its Ray claim, or its threads)",
    )
    cmd.add_argument(
        "--config",
        type=Path,
        help="app config whose per-replica resources to plan with (e.g. gpu.yaml)",
    )
    cmd.add_argument("--json", action="store_true", help="print the plan as JSON")


def _command(args: argparse.Namespace) -> int:
    try:
        report = json.loads(Path(args.report).read_text())
        app_config = None
        if args.config is not None:
            from deployments.config import load_app_config

            app_config = load_app_config(args.config)
        plan = plan_from_report(
            report,
            sessions=args.sessions,
            slo_ttff_s=args.slo_ttff_ms / 1000.0,
            cycle_s=args.turn_interval_s,
            quantile=args.quantile,
            max_utilisation=args.max_utilisation,
            slots={k: int(v) for k, v in _per_stage(args.slots, "--slots").items()},
            app_config=app_config,
            cpus=_per_stage(args.cpus, "--cpus"),
        )
    except (OSError, ValueError) as exc:
        print(f"plan: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2, default=str))
    else:
        print(format_plan(plan, str(args.report)))
    return 0 if plan.feasible else 1


def add_plan_command(subparsers) -> None:
    """Add `avatar plan` to an argparse subparsers object (`func(args) -> exit code`)."""
    cmd = subparsers.add_parser(
        "plan",
        help="replicas and CPUs/GPUs per stage for N sessions within a TTFF objective",
        description=__doc__.splitlines()[0],
    )
    _add_arguments(cmd)
    cmd.set_defaults(func=_command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.plan", description=__doc__.splitlines()[0]
    )
    _add_arguments(parser)
    return _command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
