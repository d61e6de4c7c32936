"""Capacity planner: replicas and CPUs/GPUs per stage for N sessions within a TTFF objective.

It reads what a load test measured (`loadtests.run`'s report.json): each stage's seconds per
call and calls per turn (`stage_costs`), the time-to-first-frame at the lightest load
(`baseline`) and how often a session takes a turn (`session_cycle_s`: speak + turn + listen +
think). Then, per stage, it treats the replicas as an M/M/c queue (`loadtests.capacity` says
how) and adds replicas where they cut the predicted TTFF most, until it meets the objective.

    avatar plan --report /tmp/loadtest-reports/fake/report.json --sessions 200 --slo-ttff-ms 2500
    python -m loadtests.plan --report R.json --sessions 20 --slo-ttff-ms 3000 --config gpu.yaml

No replica count brings TTFF under the unloaded baseline: then the plan says so (exit 1) and
the answer is faster stages (a GPU, a smaller model, a shorter first sentence), not more of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from loadtests.capacity import PlanError, format_plan
from loadtests.plan_report import plan_from_report
from loadtests.stage_costs import STAGES

DEFAULT_REPORT = Path("/tmp/loadtest-reports/latest/report.json")


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
            from services.core.config import load_app_config

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
