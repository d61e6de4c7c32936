"""The load-test report: built from one run's raw material, written as JSON, Markdown and PNG.

`build_report` is pure (records, locust's user history, sampler rows and counters in; the
report dict out), so it is unit-tested without a cluster; `write_outputs` writes report.json,
report.md (`loadtests.report_md`) and report.png (`loadtests.plots`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from loadtests.plots import plot
from loadtests.prom_sampler import counters_between
from loadtests.report_md import markdown
from loadtests.shapes import Shape
from loadtests.slo import Slo
from loadtests.stage_costs import STAGES, stage_costs
from loadtests.stats import (
    baseline_of,
    capacity_of,
    distribution,
    failures_of,
    figures_of,
    latency_table,
    notes_of,
    round_or_none,
    session_cycle_s,
    windows_of,
)

SCHEMA = "avatar-loadtest-report/1"


def build_report(
    *,
    records: list[dict[str, Any]],
    history: list[tuple[float, int]],
    samples: list[dict[str, Any]],
    counters: dict[str, dict[str, float]],
    slo: Slo,
    counter_series: list[tuple[float, dict[str, dict[str, float]]]] | None = None,
    metrics_lag_s: float = 0.0,
    shape: Shape,
    t_start: float,
    t_end: float,
    target: dict[str, Any],
    run: dict[str, Any],
    locust_stats: list[dict[str, Any]] | None = None,
    prometheus: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the JSON report holds, from the raw material of one run (pure: testable)."""
    from loadtests.machine import describe

    start = history[0][0] if history else t_start
    span = max(1e-9, t_end - start)
    overall = figures_of(records, span_s=span)
    # Windows end with the shape: after it, locust is only letting turns in flight finish.
    windows = windows_of(records, history, start, min(t_end, start + shape.duration_s), slo)
    capacity = capacity_of(windows)
    checks = slo.check(overall)
    personas = sorted({r["persona"] for r in records})
    replicas = _replica_series(samples, start, history)
    baseline = baseline_of(windows, records, start)
    costs = stage_costs(records, counters, target.get("deployments"), target.get("backends"))
    if baseline:
        # Costs at the lightest load: no call waiting on another inside a replica.
        spans = [(start + a, start + b) for a, b in baseline["spans_s"]]
        inside = [r for r in records if any(a <= r["t1"] < b for a, b in spans)]
        window_counters: dict[str, dict[str, float]] = {}
        for a, b in spans:
            for group, items in counters_between(counter_series or [], a, b, metrics_lag_s).items():
                for k, v in items.items():
                    bucket = window_counters.setdefault(group, {})
                    bucket[k] = bucket.get(k, 0.0) + v
        light = stage_costs(inside, window_counters, None, None)
        for stage, entry in light.items():
            if not entry.get("seconds_per_call"):
                continue
            # Calls per turn are the reply's shape, not the load's: the whole run counts them
            # best (a short window cuts turns at its edges).
            calls = costs[stage].get("calls_per_turn") or entry["calls_per_turn"]
            costs[stage]["baseline"] = {
                "source": entry["source"],
                "seconds_per_call": entry["seconds_per_call"],
                "calls_per_turn": calls,
                "seconds_per_turn": round(entry["seconds_per_call"] * calls, 4),
                "calls": entry["calls"],
                "users": baseline["users"],
            }
    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": describe(),
        "target": target,
        "shape": shape.describe(),
        "run": {**run, "duration_s": round(t_end - start, 1)},
        "slo": {
            "passed": all(c["passed"] for c in checks),
            "checks": checks,
            "turn_timeout_s": slo.turn_timeout_s,
            "window_s": slo.window_s,
            "min_window_turns": slo.min_window_turns,
        },
        "turns": {
            "attempts": overall["attempts"],
            "completed": overall["completed"],
            "turns_per_min": overall.get("turns_per_min"),
            "error_rate": round_or_none(overall["error_rate"]),
            "by_kind": {
                k: _counts([r for r in records if r["kind"] == k])
                for k in sorted({r["kind"] for r in records})
            },
        },
        "latency_s": latency_table(records),
        "per_persona": {
            p: {
                "latency_s": latency_table([r for r in records if r["persona"] == p]),
                **_counts([r for r in records if r["persona"] == p]),
            }
            for p in personas
        },
        "stall_s": distribution([r.get("stall_s") for r in records if r["outcome"] == "ok"]),
        "failures": failures_of(records),
        "notes": notes_of(records, target),
        "capacity": capacity,
        "baseline": baseline,
        "session_cycle_s": session_cycle_s(records),
        "windows": windows,
        "users": [[round(t - start, 1), u] for t, u in history],
        "turn_points": _turn_points(records, start),
        "replicas": replicas,
        "server_turns": {k: round(v) for k, v in counters.get("turns", {}).items()},
        "stage_costs": costs,
        "locust": locust_stats or [],
        "prometheus": prometheus,
        "files": {},
    }


def _counts(records: list[dict[str, Any]]) -> dict[str, Any]:
    f = figures_of(records)
    return {k: f[k] for k in ("attempts", "completed", "rejected_503", "timeouts", "errors")}


def _users_at(history: list[tuple[float, int]], t: float) -> int | None:
    """Users active at `t` (the last history row at or before it)."""
    users = None
    for ts, u in history:
        if ts > t:
            break
        users = u
    return users


def _replica_series(
    samples: list[dict[str, Any]], start: float, history: list[tuple[float, int]]
) -> dict[str, Any]:
    """Replicas (RUNNING) and queue depth per deployment over time, with a per-stage summary.

    `queued`: requests waiting in front of a deployment (Serve's handle queues); `ongoing`:
    requests its replicas are working on.
    """
    series = []
    for row in samples:
        entry: dict[str, Any] = {
            "t": round(row["t"] - start, 1),
            "users": _users_at(history, row["t"]),
        }
        for key in ("replicas", "queued", "ongoing", "target"):
            if key in row:
                entry[key] = {k: round(v, 2) for k, v in sorted(row[key].items())}
        series.append(entry)
    summary: dict[str, dict[str, Any]] = {}
    for name in (*STAGES, "router"):
        counts = [s["replicas"][name] for s in series if name in s.get("replicas", {})]
        if counts:
            peak = counts.index(max(counts))
            summary[name] = {
                "start": counts[0],
                "max": max(counts),
                "end": counts[-1],
                "scaled_up": max(counts) > counts[0],
                "scaled_down_after_peak": min(counts[peak:]) < max(counts),
            }
        for key in ("queued", "ongoing"):
            values = [s[key].get(name, 0) for s in series if key in s]
            if values:
                summary.setdefault(name, {})[f"max_{key}"] = round(max(values))
    return {"summary": summary, "series": series}


def _turn_points(records: list[dict[str, Any]], start: float) -> list[list[Any]]:
    """Per turn, for plots: [end (s into the run), users, outcome, TTFA, TTFF]."""
    return [
        [round(r["t1"] - start, 2), r.get("users"), r["outcome"], r.get("ttfa_s"), r.get("ttff_s")]
        for r in sorted(records, key=lambda r: r["t1"])
    ]


def write_outputs(report: dict[str, Any], out: Path) -> None:
    files = {
        "json": str(out / "report.json"),
        "markdown": str(out / "report.md"),
        "png": str(out / "report.png"),
        "records": str(out / "turns.jsonl"),
        "locust_csv": str(out / "locust_stats.csv"),
        "locust_history_csv": str(out / "locust_stats_history.csv"),
        "locust_failures_csv": str(out / "locust_failures.csv"),
    }
    report["files"] = files
    try:
        plot(report, Path(files["png"]))
    except ImportError as exc:
        report["files"]["png"] = None
        report["plot_error"] = f"matplotlib is not installed: {exc}"
    Path(files["json"]).write_text(json.dumps(report, indent=2) + "\n")
    Path(files["markdown"]).write_text(markdown(report))
