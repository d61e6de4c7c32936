"""Run a bounded locust load test against a local avatar cluster; write a JSON + Markdown report.

The runner starts the cluster itself (`--config FILE`, or `--fake-backends` for the registered
fake backends with realistic latencies, `loadtests/configs/fake.yaml`) or targets a running one
(`--url`). It generates the question clips (espeak, no network), runs locust headless in a
subprocess (locust monkey-patches with gevent, which Ray does not survive), samples Serve's
replica counts and queue depth while it runs, and writes to `--out`:

  report.json   the figures: TTFA/TTFF/turn percentiles per persona, failures by cause (503
                rejections apart from timeouts), turns/min per window and the most sustained
                within the SLO, replicas and queue depth over time, per-stage costs (for
                `loadtests.plan`), and the SLO verdict from `loadtests/slo.yaml`
  report.md     the same for people;  report.png  latency and replicas vs time and vs users
  locust_*.csv  locust's own stats;  turns.jsonl  one line per turn;  locust.log

    python -m loadtests.run --fake-backends --shape spike:base=5,peak=60,spike_s=60 --out DIR
    python -m loadtests.run --config deployments/configs/local.yaml --users 2 --duration 150
    python -m loadtests.run --url http://127.0.0.1:8000 --app avatar --shape step:steps=3

Every run is bounded: the shape ends by itself and the locust process is killed if it
outlives the shape by more than a grace period. Exit status: 0 SLO met, 1 SLO missed,
2 bad usage or a run that could not happen.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from loadtests.errors import LoadTestError
from loadtests.paths import FAKE_CONFIG, REPO, SLO_FILE
from loadtests.report_md import fmt
from loadtests.runner import RunOptions, run_loadtest
from loadtests.shapes import ShapeError, constant
from loadtests.slo import parse_overrides


def _add_arguments(cmd: argparse.ArgumentParser) -> None:
    target = cmd.add_argument_group("target (default: start the cluster from the local config)")
    target.add_argument("--url", help="load an already running cluster at this base URL")
    target.add_argument("--app", help="Serve app name of --url, for replica figures (avatar)")
    target.add_argument(
        "--config",
        type=Path,
        help="app config to start the cluster from (or, with --url, to read "
        "its backends and per-replica resources)",
    )
    target.add_argument(
        "--fake-backends",
        action="store_true",
        help=f"start the cluster with fake backends of realistic latency "
        f"({FAKE_CONFIG.relative_to(REPO)})",
    )
    target.add_argument("--port", type=int, help="HTTP port of a started cluster")
    target.add_argument("--num-cpus", type=int, help="logical CPUs for a started Ray")
    load = cmd.add_argument_group("load")
    load.add_argument(
        "--shape",
        help="load shape spec, e.g. ramp:users=20,ramp_s=60,hold_s=30 "
        "(kinds: ramp, step, spike, soak); or use --users/--duration",
    )
    load.add_argument("--users", type=int, help="constant users (with --duration)")
    load.add_argument("--duration", type=float, help="seconds at --users (default 60)")
    load.add_argument(
        "--user-kinds",
        default="ws,http",
        help="user classes: ws (WebSocket conversation), http (one-turn POST)",
    )
    load.add_argument("--ws-weight", type=int, default=3, help="share of ws users (3)")
    load.add_argument("--http-weight", type=int, default=1, help="share of http users (1)")
    load.add_argument(
        "--personas",
        default="default",
        help='comma-separated persona ids ("default" = the app default)',
    )
    load.add_argument("--think", default="2,6", help="think time between turns, lo,hi seconds")
    load.add_argument(
        "--no-realtime",
        action="store_true",
        help="send and take in turns flat out instead of at the pace of speech",
    )
    load.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up turn")
    report = cmd.add_argument_group("report")
    report.add_argument(
        "--out",
        type=Path,
        default=Path("/tmp/loadtest-reports/latest"),
        help="report folder (default /tmp/loadtest-reports/latest)",
    )
    report.add_argument("--slo-file", type=Path, default=SLO_FILE, help="SLO config YAML")
    report.add_argument(
        "--slo",
        action="append",
        metavar="KEY=VALUE",
        help="override one objective or setting, e.g. ttff_p95_s=4 (repeatable)",
    )
    report.add_argument("--sample-s", type=float, default=2.0, help="replica sampling period")
    report.add_argument(
        "--tail-s",
        type=float,
        default=12.0,
        help="keep sampling after the load ends (scale-down, last metrics)",
    )
    report.add_argument(
        "--prometheus",
        action="store_true",
        help="also run a local Prometheus (services.commands.monitor) for PromQL figures",
    )
    report.add_argument("--json", action="store_true", help="print the whole report as JSON")


def options_from_args(args: argparse.Namespace) -> RunOptions:
    if args.url and args.fake_backends:
        raise LoadTestError("--fake-backends starts its own cluster; do not give --url")
    if args.shape and (args.users or args.duration):
        raise LoadTestError("give --shape or --users/--duration, not both")
    if args.shape:
        shape = args.shape
    else:
        try:
            shape = constant(args.users or 2, args.duration or 60.0).spec()
        except ShapeError as exc:
            raise LoadTestError(str(exc)) from None
    try:
        lo, hi = (float(x) for x in args.think.split(","))
    except ValueError:
        raise LoadTestError(f"--think wants lo,hi seconds, got {args.think!r}") from None
    if not 0 <= lo <= hi:
        raise LoadTestError("--think wants 0 <= lo <= hi")
    return RunOptions(
        out=args.out,
        shape=shape,
        url=args.url,
        config=args.config,
        fake_backends=args.fake_backends,
        app=args.app,
        port=args.port,
        num_cpus=args.num_cpus,
        slo_file=args.slo_file,
        slo_overrides=parse_overrides(args.slo),
        personas=tuple(p.strip() for p in args.personas.split(",") if p.strip()),
        users=tuple(u.strip() for u in args.user_kinds.split(",") if u.strip()),
        ws_weight=args.ws_weight,
        http_weight=args.http_weight,
        think_s=(lo, hi),
        realtime=not args.no_realtime,
        warmup=not args.no_warmup,
        sample_s=args.sample_s,
        tail_s=args.tail_s,
        prometheus=args.prometheus,
    )


def summary_line(report: dict[str, Any]) -> str:
    lat, fail, cap = report["latency_s"]["ttff"], report["failures"], report["capacity"]
    return (
        f"SLO {'PASS' if report['slo']['passed'] else 'FAIL'}: "
        f"{report['turns']['completed']}/{report['turns']['attempts']} turns; "
        f"TTFF p50/p95/p99 {fmt(lat['p50'])}/{fmt(lat['p95'])}/{fmt(lat['p99'])} s; "
        f"503s {fail['rejected_503']}, timeouts {fail['timeouts']}, errors {fail['errors']}; "
        f"max sustained {fmt(cap['max_sustained_turns_per_min_within_slo'])} turns/min "
        f"within SLO; report {report['files']['markdown']}"
    )


def _command(args: argparse.Namespace) -> int:
    try:
        report = run_loadtest(options_from_args(args))
    except LoadTestError as exc:
        print(f"loadtest: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    print(summary_line(report), flush=True)
    return 0 if report["slo"]["passed"] else 1


def add_loadtest_command(subparsers) -> None:
    """Add `avatar loadtest` to an argparse subparsers object (`func(args) -> exit code`)."""
    cmd = subparsers.add_parser(
        "loadtest",
        help="run a bounded locust load test and write a JSON + Markdown report with SLO verdict",
        description=__doc__.splitlines()[0],
    )
    _add_arguments(cmd)
    cmd.set_defaults(func=_command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.run", description=__doc__.splitlines()[0]
    )
    _add_arguments(parser)
    return _command(parser.parse_args(argv))
