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
import csv
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from loadtests.shapes import Shape, ShapeError, Step, constant, parse_shape

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LOCUSTFILE = HERE / "locustfile.py"
SLO_FILE = HERE / "slo.yaml"
FAKE_CONFIG = HERE / "configs" / "fake.yaml"
LOCAL_CONFIG = REPO / "deployments" / "configs" / "local.yaml"
STAGES = ("asr", "llm", "tts", "render")
SCHEMA = "avatar-loadtest-report/1"
USER_CLASSES = {"ws": "ConversationUser", "http": "HttpTurnUser"}
QUESTIONS = (
    "Hello! Can you tell me a little about yourself?",
    "What do you think makes a team work well together?",
    "How should I prepare for my first day at a new job?",
    "What is the best way to learn something new?",
)
# Locust's own start-up and shutdown on a busy 2-core machine; beyond this it is hung.
LOCUST_GRACE_S = 90.0
# Ray's own (lower-case) setting: how often each process exports its metrics.
RAY_METRICS_INTERVAL_ENV = "RAY_metrics_report_interval_ms"


class LoadTestError(RuntimeError):
    """The load test could not run (bad config, cluster failed to start, locust crashed)."""


# ---------------------------------------------------------------------------------------------
# SLOs


_QUANTILE_KEY = re.compile(r"^(ttfa|ttff|turn|stall)_p(50|90|95|99)_s$")
RATE_KEYS = ("error_rate", "rejected_rate", "timeout_rate")
MIN_KEYS = ("min_completed_turns", "min_turns_per_min")


@dataclass(frozen=True)
class Slo:
    """Objectives a run is judged against, plus how windows and timeouts are measured."""

    objectives: dict[str, float]
    turn_timeout_s: float = 60.0
    window_s: float = 30.0
    min_window_turns: int = 3

    def __post_init__(self) -> None:
        for key, limit in self.objectives.items():
            if not (_QUANTILE_KEY.match(key) or key in RATE_KEYS or key in MIN_KEYS):
                raise LoadTestError(
                    f"unknown SLO objective {key!r}: use <ttfa|ttff|turn|stall>_p<50|90|95|99>_s,"
                    f" {', '.join(RATE_KEYS + MIN_KEYS)}"
                )
            if not isinstance(limit, int | float) or not math.isfinite(limit) or limit < 0:
                raise LoadTestError(f"SLO objective {key} must be a number >= 0, got {limit!r}")
        if not (self.turn_timeout_s > 0 and self.window_s > 0 and self.min_window_turns >= 0):
            raise LoadTestError("turn_timeout_s and window_s must be > 0, min_window_turns >= 0")

    @classmethod
    def load(cls, path: Path, overrides: dict[str, float] | None = None) -> Slo:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise LoadTestError(f"cannot read the SLO file {path}: {exc}") from None
        unknown = set(data) - {"objectives", "turn_timeout_s", "window_s", "min_window_turns"}
        if unknown:
            raise LoadTestError(f"{path}: unknown keys {sorted(unknown)}")
        objectives = dict(data.get("objectives") or {})
        settings = {
            k: data[k] for k in ("turn_timeout_s", "window_s", "min_window_turns") if k in data
        }
        for key, value in (overrides or {}).items():
            if key in ("turn_timeout_s", "window_s", "min_window_turns"):
                settings[key] = value
            else:
                objectives[key] = value
        if "min_window_turns" in settings:
            settings["min_window_turns"] = int(settings["min_window_turns"])
        return cls(objectives=objectives, **settings)

    @staticmethod
    def passes(key: str, value: float | None, limit: float) -> bool:
        if value is None:
            return False
        return value >= limit if key.startswith("min_") else value <= limit

    def check(self, figures: dict[str, float | None], keys=None) -> list[dict[str, Any]]:
        """One entry per objective (or per `keys`): value, limit, and whether it is met."""
        out = []
        for key, limit in self.objectives.items():
            if keys is not None and key not in keys:
                continue
            value = figures.get(key)
            out.append(
                {
                    "objective": key,
                    "op": ">=" if key.startswith("min_") else "<=",
                    "limit": limit,
                    "value": value,
                    "passed": self.passes(key, value, limit),
                }
            )
        return out


def parse_overrides(items: list[str] | None) -> dict[str, float]:
    out = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise LoadTestError(f"--slo wants KEY=NUMBER, got {item!r}") from None
        if not eq:
            raise LoadTestError(f"--slo wants KEY=NUMBER, got {item!r}")
    return out


# ---------------------------------------------------------------------------------------------
# Figures from the per-turn records


def quantile(values: list[float], q: float) -> float | None:
    """Linear-interpolated quantile (numpy's default), q in [0, 1]; None for no values."""
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return None
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def distribution(values: list[float]) -> dict[str, float | int | None]:
    xs = [v for v in values if v is not None]
    out: dict[str, float | int | None] = {"n": len(xs)}
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)):
        v = quantile(xs, q)
        out[name] = None if v is None else round(v, 4)
    out["mean"] = round(sum(xs) / len(xs), 4) if xs else None
    out["max"] = round(max(xs), 4) if xs else None
    return out


def load_records(path: Path) -> list[dict[str, Any]]:
    if not Path(path).exists():
        return []
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a killed locust
    return records


OUTCOMES = ("ok", "rejected", "timeout", "error")


def figures_of(records: list[dict[str, Any]], span_s: float | None = None) -> dict[str, Any]:
    """Counts, rates and latency quantiles of a set of turn records (`span_s`: for turns/min)."""
    counts = {o: sum(r["outcome"] == o for r in records) for o in OUTCOMES}
    attempts = len(records)
    ok = [r for r in records if r["outcome"] == "ok"]
    figures: dict[str, Any] = {
        "attempts": attempts,
        "completed": counts["ok"],
        "rejected_503": counts["rejected"],
        "timeouts": counts["timeout"],
        "errors": counts["error"],
        "error_rate": (attempts - counts["ok"]) / attempts if attempts else None,
        "rejected_rate": counts["rejected"] / attempts if attempts else None,
        "timeout_rate": counts["timeout"] / attempts if attempts else None,
        "min_completed_turns": counts["ok"],
    }
    if span_s:
        figures["turns_per_min"] = round(60.0 * counts["ok"] / span_s, 2)
        figures["min_turns_per_min"] = figures["turns_per_min"]
    for metric in ("ttfa", "ttff", "turn", "stall"):
        dist = distribution([r.get(f"{metric}_s") for r in ok])
        for p in ("p50", "p90", "p95", "p99"):
            figures[f"{metric}_{p}_s"] = dist[p]
    return figures


def latency_table(records: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in records if r["outcome"] == "ok"]
    return {m: distribution([r.get(f"{m}_s") for r in ok]) for m in ("ttfa", "ttff", "turn")}


def failures_of(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Failures by cause: 503 rejections (fast, by design) apart from timeouts and errors."""
    failed = [r for r in records if r["outcome"] != "ok"]
    by_error: dict[str, int] = {}
    for r in failed:
        key = r.get("error") or r["outcome"]
        by_error[key] = by_error.get(key, 0) + 1
    rejected = [r for r in failed if r["outcome"] == "rejected"]
    refused = [r for r in rejected if not r.get("streamed")]
    return {
        "total": len(failed),
        "rejected_503": len(rejected),
        "timeouts": sum(r["outcome"] == "timeout" for r in failed),
        "errors": sum(r["outcome"] == "error" for r in failed),
        "rejected_at": {
            "connect": sum(r.get("phase") == "connect" for r in rejected),
            "before_reply": len(refused) - sum(r.get("phase") == "connect" for r in rejected),
            "mid_reply": len(rejected) - len(refused),
        },
        # How long a client waited to be told "503" before any reply: overload must answer
        # fast, not hang. (A reply cut short by a 503 mid-stream ran for a while first.)
        "rejected_latency_s": distribution([r["t1"] - r["t0"] for r in refused]),
        "by_error": dict(sorted(by_error.items(), key=lambda kv: -kv[1])),
    }


def notes_of(records: list[dict[str, Any]], target: dict[str, Any]) -> list[str]:
    """Things a reader of the figures should know, found in this run's failures."""
    notes = ["2-core shared machine: figures are noisy (±15-20% between back-to-back runs)."]
    ws_500 = sum(r.get("phase") == "connect" and r.get("status") == 500 for r in records)
    if ws_500:
        notes.append(
            f"{ws_500} WebSocket connects were refused with HTTP 500, not 503: Ray Serve's proxy "
            "answers an upgrade beyond the router's max_ongoing_requests + max_queued_requests "
            "with 500 (it sends an HTTP 503 response on a WebSocket scope, which uvicorn turns "
            "into 500). They are counted as errors, not as 503 rejections."
        )
    dropped = [
        r
        for r in records
        if r["kind"] == "ws"
        and r["outcome"] == "error"
        and (r.get("error") or "").startswith("connection: ")
    ]
    if dropped:
        notes.append(
            f"{len(dropped)} WebSocket turns or connects ended with the server dropping the "
            "connection (reset, broken pipe, closed): under load Serve's single uvicorn proxy "
            "lags, and its keepalive (ping every 20 s, 20 s to answer) can time out although "
            "this client answers pings. Counted as errors, not as 503s."
        )
    timeouts = [r for r in records if r["outcome"] == "timeout"]
    if timeouts:
        where = sorted({r.get("phase", "turn") for r in timeouts})
        notes.append(
            f"{len(timeouts)} turns timed out ({', '.join(where)}): requests that wait without "
            "bound (an unbounded queue, or a WebSocket connect queued behind a full router) "
            "show up here instead of as fast 503s."
        )
    return notes


def users_between(history: list[tuple[float, int]], a: float, b: float) -> list[int]:
    return [u for t, u in history if a <= t < b]


def windows_of(
    records: list[dict[str, Any]],
    history: list[tuple[float, int]],
    start: float,
    end: float,
    slo: Slo,
) -> list[dict[str, Any]]:
    """Fixed windows over the run: users, throughput, latency and the SLO verdict of each."""
    out = []
    a = start
    while a < end:
        b = min(a + slo.window_s, end)
        if b - a < slo.window_s / 2 and out:
            break  # a sliver at the end says nothing about sustained throughput
        inside = [r for r in records if a <= r["t1"] < b]
        users = users_between(history, a, b) or [r["users"] for r in inside if r.get("users")]
        figures = figures_of(inside, span_s=b - a)
        per_window = [k for k in slo.objectives if not k.startswith("min_")]
        checks = slo.check(figures, keys=per_window)
        enough = figures["completed"] >= max(1, slo.min_window_turns)
        out.append(
            {
                "start_s": round(a - start, 1),
                "end_s": round(b - start, 1),
                "users": max(users) if users else 0,
                "users_mean": round(sum(users) / len(users), 1) if users else 0,
                **{
                    k: figures[k]
                    for k in (
                        "attempts",
                        "completed",
                        "rejected_503",
                        "timeouts",
                        "errors",
                        "turns_per_min",
                        "ttfa_p95_s",
                        "ttff_p50_s",
                        "ttff_p95_s",
                        "turn_p95_s",
                    )
                },
                "error_rate": _r(figures["error_rate"]),
                "within_slo": enough and all(c["passed"] for c in checks),
                "failed_objectives": [c["objective"] for c in checks if not c["passed"]]
                + ([] if enough else ["min_window_turns"]),
            }
        )
        a = b
    return out


def capacity_of(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """The most turns/min any window sustained while meeting every per-window objective."""
    good = [w for w in windows if w["within_slo"]]
    best = max(good, key=lambda w: w["turns_per_min"], default=None)
    peak = max(windows, key=lambda w: w["turns_per_min"] or 0, default=None)
    return {
        "max_sustained_turns_per_min_within_slo": best["turns_per_min"] if best else 0.0,
        "at_users": best["users"] if best else None,
        "window": [best["start_s"], best["end_s"]] if best else None,
        "peak_turns_per_min_any": peak["turns_per_min"] if peak else 0.0,
        "peak_at_users": peak["users"] if peak else None,
        "windows_within_slo": len(good),
        "windows": len(windows),
    }


def session_cycle_s(records: list[dict[str, Any]]) -> float | None:
    """Median time between one user's consecutive turns: speak + turn + listen + think."""
    by_user: dict[str, list[float]] = {}
    for r in records:
        if r["outcome"] == "ok" and r.get("phase", "turn") == "turn":
            by_user.setdefault(r["user"], []).append(r["t0"])
    gaps = []
    for starts in by_user.values():
        starts.sort()
        gaps += [b - a for a, b in zip(starts, starts[1:], strict=False)]
    value = quantile(gaps, 0.5)
    return None if value is None else round(value, 3)


def baseline_of(windows: list[dict[str, Any]], records, start: float) -> dict[str, Any]:
    """Latency at the lightest load: the planner adds queueing on top of this."""
    candidates = [w for w in windows if w["completed"] and w["ttff_p95_s"] is not None]
    if not candidates:
        return {}
    low = min(w["users"] for w in candidates)
    inside = [
        r
        for r in records
        for w in candidates
        if w["users"] == low and w["start_s"] <= r["t1"] - start < w["end_s"]
    ]
    figures = figures_of(inside)
    return {
        "users": low,
        "turns": figures["completed"],
        "spans_s": [[w["start_s"], w["end_s"]] for w in candidates if w["users"] == low],
        **{
            k: figures[k]
            for k in (
                "ttfa_p50_s",
                "ttfa_p95_s",
                "ttff_p50_s",
                "ttff_p95_s",
                "turn_p50_s",
                "turn_p95_s",
            )
        },
    }


# ---------------------------------------------------------------------------------------------
# Per-stage costs (for the capacity planner)


def stage_costs(
    records: list[dict[str, Any]],
    counters: dict[str, dict[str, float]] | None,
    deployments: dict[str, Any] | None,
    backends: dict[str, str] | None,
) -> dict[str, Any]:
    """Seconds of stage work per completed turn, and the calls that make it up.

    Replica-side durations come from the stages' own histogram (`avatar_stage_latency_seconds`,
    scraped from Ray's exporter) when it was reachable; otherwise from the router's per-turn
    timings in each `done` event, which also include any queueing in front of the stage.
    """
    ok = [r for r in records if r["outcome"] == "ok" and r.get("server")]
    out: dict[str, Any] = {}
    # Router view, per turn: (seconds, calls).
    router: dict[str, list[tuple[float, float]]] = {s: [] for s in STAGES}
    for r in ok:
        t, n = r["server"], max(1, int(r.get("audio_events") or 1))
        if t.get("asr_s"):
            router["asr"].append((t["asr_s"], 1))
        if t.get("llm_done_s"):
            router["llm"].append((max(0.0, t["llm_done_s"] - t.get("asr_s", 0.0)), 1))
        if t.get("tts_s"):
            router["tts"].append((t["tts_s"], n))
        if t.get("render_s"):
            router["render"].append((t["render_s"], n))
    turns_server = (counters or {}).get("turns", {}).get("all", 0.0)
    for stage in STAGES:
        entry: dict[str, Any] = {}
        calls = (counters or {}).get("stage_calls", {}).get(stage, 0.0)
        seconds = (counters or {}).get("stage_seconds", {}).get(stage, 0.0)
        if calls > 0 and turns_server > 0:
            entry = {
                "source": "ray_metrics",
                "seconds_per_call": round(seconds / calls, 4),
                "calls_per_turn": round(calls / turns_server, 3),
                "seconds_per_turn": round(seconds / turns_server, 4),
                "calls": int(calls),
            }
        elif router[stage]:
            total_s = sum(s for s, _ in router[stage])
            total_calls = sum(n for _, n in router[stage])
            entry = {
                "source": "turn_timings",
                "seconds_per_call": round(total_s / total_calls, 4),
                "calls_per_turn": round(total_calls / len(ok), 3),
                "seconds_per_turn": round(total_s / len(ok), 4),
                "calls": int(total_calls),
            }
        if router[stage]:
            entry["router_seconds_per_turn"] = round(sum(s for s, _ in router[stage]) / len(ok), 4)
        options = (deployments or {}).get(stage) or {}
        actor = options.get("ray_actor_options") or {}
        entry.update(
            backend=(backends or {}).get(stage),
            max_ongoing_requests=options.get("max_ongoing_requests"),
            num_cpus=actor.get("num_cpus"),
            num_gpus=actor.get("num_gpus", 0.0),
        )
        out[stage] = entry
    return out


# ---------------------------------------------------------------------------------------------
# Sampling Serve while the load runs


_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
GAUGES = {
    "ray_serve_deployment_queued_queries": "queued",
    "ray_serve_num_ongoing_requests_at_replicas": "ongoing",
    "ray_serve_autoscaling_target_replicas": "target",
}
COUNTERS = {
    "ray_avatar_stage_latency_seconds_sum": "stage_seconds",
    "ray_avatar_stage_latency_seconds_count": "stage_calls",
    "ray_avatar_turns_total": "turns",
}


def parse_samples(text: str, names) -> list[tuple[str, dict[str, str], float]]:
    """The samples of the named metrics in Prometheus text format (other lines skipped fast)."""
    out = []
    for line in text.splitlines():
        if not line or line[0] == "#" or not line.startswith(names):
            continue
        m = _SAMPLE.match(line)
        if m is None or m.group(1) not in names:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), value))
    return out


class CounterDelta:
    """Increase of counters over a run, robust to series that appear (new replicas) or vanish.

    A series seen in the first scrape is measured from that value; a later one from zero.
    """

    def __init__(self) -> None:
        self.first: dict[tuple, float] | None = None
        self.last: dict[tuple, float] = {}

    def update(self, values: dict[tuple, float]) -> None:
        if self.first is None:
            self.first = dict(values)
        self.last.update(values)

    def totals(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for key, value in self.last.items():
            group, item = key[0], key[1]
            delta = value - (self.first or {}).get(key, 0.0)
            out.setdefault(group, {})
            out[group][item] = out[group].get(item, 0.0) + max(0.0, delta)
        return out


def counters_between(
    series: list[tuple[float, dict[str, dict[str, float]]]], a: float, b: float, lag_s: float = 0
) -> dict[str, dict[str, float]]:
    """Counter increase between `a` and `b`, read `lag_s` later (metrics arrive late)."""

    def at(t: float) -> dict[str, dict[str, float]]:
        before = [totals for ts, totals in series if ts <= t + lag_s]
        return before[-1] if before else {}

    start, end = at(a), at(b)
    return {
        group: {k: max(0.0, v - start.get(group, {}).get(k, 0.0)) for k, v in items.items()}
        for group, items in end.items()
    }


class Sampler(threading.Thread):
    """Every `interval_s`: replicas per deployment (serve.status) and queue depth (metrics)."""

    def __init__(self, app: str, metrics_urls: list[str], interval_s: float, serve_ok: bool):
        super().__init__(daemon=True, name="loadtest-sampler")
        self.app, self.urls, self.serve_ok = app, metrics_urls, serve_ok
        self.interval_s = interval_s
        self.rows: list[dict[str, Any]] = []
        self.counters = CounterDelta()
        # (time, totals so far) per scrape: per-window stage costs come from differences.
        self.counter_series: list[tuple[float, dict[str, dict[str, float]]]] = []
        self.errors: dict[str, str] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while True:
            self.sample()
            if self._halt.wait(self.interval_s):
                break
        self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)

    def sample(self) -> None:
        row: dict[str, Any] = {"t": time.time()}
        if self.serve_ok:
            try:
                row["replicas"] = self.replicas()
            except Exception as exc:  # noqa: BLE001 - a missed sample must not end the run
                self.errors["serve_status"] = f"{type(exc).__name__}: {exc}"[:200]
        if self.urls:
            try:
                row.update(self.scrape())
            except Exception as exc:  # noqa: BLE001
                self.errors["metrics"] = f"{type(exc).__name__}: {exc}"[:200]
        self.rows.append(row)

    def replicas(self) -> dict[str, int]:
        from ray import serve

        app = serve.status().applications.get(self.app)
        if app is None:
            return {}
        return {name: d.replica_states.get("RUNNING", 0) for name, d in app.deployments.items()}

    def scrape(self) -> dict[str, Any]:
        names = tuple(GAUGES) + tuple(COUNTERS)
        gauges: dict[str, dict[str, float]] = {g: {} for g in GAUGES.values()}
        counters: dict[tuple, float] = {}
        for url in self.urls:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode("utf-8", "replace")
            for name, labels, value in parse_samples(text, names):
                if labels.get("application") != self.app:
                    continue
                if name in GAUGES:
                    bucket = gauges[GAUGES[name]]
                    dep = labels.get("deployment", "?")
                    bucket[dep] = bucket.get(dep, 0.0) + value
                elif name == "ray_avatar_turns_total":
                    counters[("turns", "all", url, tuple(sorted(labels.items())))] = value
                else:
                    stage = labels.get("stage") or labels.get("deployment", "?")
                    key = (COUNTERS[name], stage, url, tuple(sorted(labels.items())))
                    counters[key] = value
        self.counters.update(counters)
        self.counter_series.append((time.time(), self.counters.totals()))
        return gauges


def metrics_urls() -> list[str]:
    """Ray metrics exporters: of the connected Ray, else of the latest local Ray session."""
    try:
        import ray

        if ray.is_initialized():
            ports = {n.get("MetricsExportPort") for n in ray.nodes() if n.get("Alive")}
            return [f"http://127.0.0.1:{p}/metrics" for p in sorted(ports) if p]
    except ImportError:
        pass
    try:
        from services.monitor import discover_targets

        return [f"http://{t}/metrics" for t in discover_targets()]
    except ImportError:
        return []


# ---------------------------------------------------------------------------------------------
# Prometheus (optional)


def prometheus_figures(url: str, app: str, span_s: float) -> dict[str, Any]:
    """Server-side quantiles over the run from PromQL (what a dashboard would show)."""
    rng = f"{max(10, int(span_s))}s"
    sel = f'application="{app}"'
    queries = {
        "stage_latency_p95_s": "histogram_quantile(0.95, sum by (le, stage) (increase("
        f"ray_avatar_stage_latency_seconds_bucket{{{sel}}}[{rng}])))",
        "server_ttff_p95_s": "histogram_quantile(0.95, sum by (le) (increase("
        f"ray_avatar_turn_time_to_first_frame_seconds_bucket{{{sel}}}[{rng}])))",
        "server_turns": f"sum by (status) (increase(ray_avatar_turns_total{{{sel}}}[{rng}]))",
    }
    out: dict[str, Any] = {}
    for name, query in queries.items():
        q = urllib.parse.urlencode({"query": query})
        with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=10) as response:
            result = json.load(response)["data"]["result"]
        values = {}
        for item in result:
            label = item["metric"].get("stage") or item["metric"].get("status") or "all"
            value = float(item["value"][1])
            values[label] = None if math.isnan(value) else round(value, 4)
        out[name] = values
    return out


# ---------------------------------------------------------------------------------------------
# Clips, cluster, locust


def make_clips(folder: Path, backend: str = "espeak", questions=QUESTIONS) -> Path:
    """Spoken question WAVs from a local TTS backend (espeak: fast, no model download)."""
    from services.audio import write_wav
    from services.registry import create_backend

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("q*.wav"))) >= len(questions):
        return folder
    tts = create_backend("tts", backend)
    tts.load()
    for i, question in enumerate(questions):
        speech = tts.synthesize(question)
        write_wav(folder / f"q{i}.wav", speech.samples, speech.sample_rate)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_history(path: Path) -> list[tuple[float, int]]:
    """(timestamp, users) per second from locust's stats history (the Aggregated rows)."""
    if not path.exists():
        return []
    out = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get("Name") == "Aggregated":
                try:
                    out.append((float(row["Timestamp"]), int(float(row["User Count"]))))
                except (KeyError, ValueError):
                    continue
    return out


def read_stats(path: Path) -> list[dict[str, Any]]:
    """locust's per-entry table (ttfa/ttff/turn/session per persona), numbers as numbers."""
    if not path.exists():
        return []
    keep = {
        "Type": "type",
        "Name": "name",
        "Request Count": "count",
        "Failure Count": "failures",
        "Median Response Time": "median_ms",
        "Average Response Time": "mean_ms",
        "95%": "p95_ms",
        "99%": "p99_ms",
        "Max Response Time": "max_ms",
        "Requests/s": "per_s",
    }
    out = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            entry: dict[str, Any] = {}
            for src, dst in keep.items():
                value = row.get(src, "")
                try:
                    entry[dst] = value if dst in ("type", "name") else round(float(value), 2)
                except ValueError:
                    entry[dst] = None
            out.append(entry)
    return out


def run_locust(
    url: str,
    shape: Shape,
    out: Path,
    env: dict[str, str],
    users: list[str],
    stop_timeout_s: float,
) -> int:
    """Headless locust in its own process group; killed if it outlives the shape + grace."""
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        url,
        "--csv",
        str(out / "locust"),
        "--csv-full-history",
        "--only-summary",
        "--stop-timeout",
        f"{stop_timeout_s:g}",
        "--loglevel",
        "WARNING",
        "--logfile",
        str(out / "locust.log"),
        *users,
    ]
    limit = shape.duration_s + stop_timeout_s + LOCUST_GRACE_S
    with (out / "locust.out").open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            start_new_session=True,
        )
        try:
            return process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            raise LoadTestError(f"locust ran past {limit:.0f} s and was stopped") from None
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)  # Ctrl-C: never leave load running
            process.wait()
            raise


def warm_up(url: str, clip: Path, timeout_s: float) -> float | None:
    """One untimed spoken turn, so lazy first-call costs do not land in the figures."""
    import base64

    body = json.dumps({"audio_b64": base64.b64encode(clip.read_bytes()).decode()}).encode()
    request = urllib.request.Request(
        url.rstrip("/") + "/v1/turn", data=body, headers={"content-type": "application/json"}
    )
    start = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            for _ in response:
                pass
    except (urllib.error.URLError, OSError) as exc:
        raise LoadTestError(f"the warm-up turn against {url} failed: {exc}") from None
    return round(time.monotonic() - start, 2)


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class RunOptions:
    """What `avatar loadtest` / `python -m loadtests.run` asks for."""

    out: Path
    shape: str = "soak:users=2,duration_s=60,ramp_s=5"
    url: str | None = None
    config: Path | None = None
    fake_backends: bool = False
    app: str | None = None
    app_config: Any = None  # an AppConfig of the target, for its backends and resources
    port: int | None = None
    num_cpus: int | None = None
    slo_file: Path = SLO_FILE
    slo_overrides: dict[str, float] = field(default_factory=dict)
    personas: tuple[str, ...] = ("default",)
    users: tuple[str, ...] = ("ws", "http")
    ws_weight: int = 3
    http_weight: int = 1
    think_s: tuple[float, float] = (2.0, 6.0)
    realtime: bool = True
    warmup: bool = True
    sample_s: float = 2.0
    tail_s: float = 12.0
    stop_timeout_s: float | None = None
    prometheus: bool = False
    clip_backend: str = "espeak"


def _start_cluster(opts: RunOptions, out: Path):
    """Start Ray + the app from a config, with session state kept inside the report folder."""
    from deployments import local
    from deployments.config import load_app_config

    config = load_app_config(FAKE_CONFIG if opts.fake_backends else opts.config or LOCAL_CONFIG)
    state = config.state.model_copy(update={"sqlite_path": str(out / "sessions.db")})
    personas = config.personas.model_copy(
        update={"transcripts_path": str(out / "transcripts.sqlite3")}
    )
    http = config.http.model_copy(
        update={"host": "127.0.0.1", "port": opts.port or config.http.port}
    )
    config = config.model_copy(update={"state": state, "personas": personas, "http": http})
    # Finer metric exports than Ray's 10 s default, so queue depth is seen while it happens.
    os.environ.setdefault(RAY_METRICS_INTERVAL_ENV, "2000")
    try:
        url = local.start(config, num_cpus=opts.num_cpus)
    except Exception:
        local.stop()
        raise
    return config, url


def run_loadtest(opts: RunOptions) -> dict[str, Any]:
    """Run one bounded load test; returns the report (also written under `opts.out`)."""
    out = Path(opts.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        shape = parse_shape(opts.shape)
    except ShapeError as exc:
        raise LoadTestError(str(exc)) from None
    slo = Slo.load(opts.slo_file, opts.slo_overrides)
    if isinstance(shape, Step) and "window_s" not in opts.slo_overrides:
        slo = Slo(slo.objectives, slo.turn_timeout_s, shape.step_s, slo.min_window_turns)
    unknown = set(opts.users) - set(USER_CLASSES)
    if unknown or not opts.users:
        raise LoadTestError(f"--user-kinds wants some of {', '.join(USER_CLASSES)}")
    clips = make_clips(out / "clips", opts.clip_backend)
    records_path = out / "turns.jsonl"
    records_path.unlink(missing_ok=True)

    started_cluster = opts.url is None
    config = opts.app_config
    if started_cluster:
        print(
            f"starting the cluster ({'fake backends' if opts.fake_backends else 'config'}) ...",
            flush=True,
        )
        config, url = _start_cluster(opts, out)
    else:
        url = opts.url.rstrip("/")
        if config is None and opts.config is not None:
            from deployments.config import load_app_config

            config = load_app_config(opts.config)
    app = opts.app or (config.name if config is not None else "avatar")
    monitor = None
    try:
        if opts.warmup:
            print(f"warm-up turn against {url} ...", flush=True)
            warmup_s = warm_up(url, sorted(clips.glob("*.wav"))[0], slo.turn_timeout_s)
            # Let the warm-up's metrics reach the exporter before the counters' baseline.
            time.sleep(_metrics_interval_s() + 0.5)
        else:
            warmup_s = None
        serve_ok = _ray_connected()
        urls = metrics_urls()
        if opts.prometheus:
            monitor = _start_prometheus(urls, out)
        sampler = Sampler(app, urls, opts.sample_s, serve_ok)
        sampler.start()
        stop_timeout = opts.stop_timeout_s
        if stop_timeout is None:
            stop_timeout = min(slo.turn_timeout_s, 30.0)
        env = {
            **os.environ,
            "AVATAR_LOADTEST_SHAPE": shape.spec(),
            "AVATAR_LOADTEST_CLIPS": str(clips),
            "AVATAR_LOADTEST_RECORDS": str(records_path),
            "AVATAR_LOADTEST_PERSONAS": ",".join(opts.personas),
            "AVATAR_LOADTEST_TURN_TIMEOUT_S": str(slo.turn_timeout_s),
            "AVATAR_LOADTEST_THINK_S": f"{opts.think_s[0]},{opts.think_s[1]}",
            "AVATAR_LOADTEST_REALTIME": "1" if opts.realtime else "0",
            "AVATAR_LOADTEST_WS_WEIGHT": str(opts.ws_weight),
            "AVATAR_LOADTEST_HTTP_WEIGHT": str(opts.http_weight),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        print(
            f"locust: {shape.spec()} ({shape.duration_s:.0f} s, up to {shape.max_users} "
            f"users) against {url}",
            flush=True,
        )
        t_start = time.time()
        try:
            exit_code = run_locust(
                url, shape, out, env, [USER_CLASSES[u] for u in opts.users], stop_timeout
            )
        finally:
            t_end = time.time()
            # Keep sampling a little: replicas scaling back down, and the last metric export.
            time.sleep(max(0.0, opts.tail_s))
            sampler.stop()
        prometheus = None
        if monitor is not None:
            try:
                prometheus = prometheus_figures(monitor[1], app, time.time() - t_start)
            except (OSError, ValueError, KeyError) as exc:
                prometheus = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        if monitor is not None:
            from services.monitor import stop_prometheus

            stop_prometheus(monitor[0])
        if started_cluster:
            from deployments import local

            local.stop()

    if not (out / "locust_stats.csv").exists():
        tail = (out / "locust.out").read_text(errors="replace")[-2000:]
        raise LoadTestError(f"locust exited with {exit_code} and wrote no stats:\n{tail}")
    report = build_report(
        records=load_records(records_path),
        history=read_history(out / "locust_stats_history.csv"),
        samples=sampler.rows,
        counters=sampler.counters.totals(),
        counter_series=sampler.counter_series,
        metrics_lag_s=_metrics_interval_s(),
        slo=slo,
        shape=shape,
        t_start=t_start,
        t_end=t_end,
        target={
            "url": url,
            "app": app,
            "started_by_runner": started_cluster,
            "config": str(FAKE_CONFIG if opts.fake_backends else opts.config or "") or None,
            "backends": _backends(config),
            "deployments": _deployments(config),
            "stage_options": _stage_options(config),
        },
        run={
            "personas": list(opts.personas),
            "user_kinds": list(opts.users),
            "weights": {"ws": opts.ws_weight, "http": opts.http_weight},
            "think_s": list(opts.think_s),
            "realtime": opts.realtime,
            "warmup_turn_s": warmup_s,
            "locust_exit_code": exit_code,
            "sampler_errors": sampler.errors,
        },
        locust_stats=read_stats(out / "locust_stats.csv"),
        prometheus=prometheus,
    )
    write_outputs(report, out)
    return report


def _metrics_interval_s() -> float:
    """How often Ray exports metrics (its default 10 s unless this process set it)."""
    try:
        return float(os.environ.get(RAY_METRICS_INTERVAL_ENV, "10000")) / 1000
    except ValueError:
        return 10.0


def _ray_connected() -> bool:
    try:
        import ray

        return ray.is_initialized()
    except ImportError:
        return False


def _start_prometheus(urls: list[str], out: Path):
    from services.monitor import MonitorError, start_prometheus, write_config

    targets = [u.split("//", 1)[1].split("/", 1)[0] for u in urls]
    try:
        config = write_config(out / "prometheus" / "prometheus.yml", targets, scrape_interval="2s")
        return start_prometheus(config, out / "prometheus")
    except MonitorError as exc:
        print(f"prometheus: not used ({exc})", flush=True)
        return None


def _backends(config) -> dict[str, str] | None:
    if config is None:
        return None
    return {s: config.pipeline.stage(s).backend for s in STAGES}


def _stage_options(config) -> dict[str, Any] | None:
    if config is None:
        return None
    return {s: config.pipeline.stage(s).options for s in STAGES}


def _deployments(config) -> dict[str, Any] | None:
    if config is None:
        return None
    return {name: options.serve_options() for name, options in config.deployments.items()}


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
            "error_rate": _r(overall["error_rate"]),
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


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


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


# ---------------------------------------------------------------------------------------------
# Outputs


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


def _fmt(value, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def markdown(report: dict[str, Any]) -> str:
    """The report for people: verdict, headline figures, failures, windows, scaling, costs."""
    slo, lat, fail, cap = report["slo"], report["latency_s"], report["failures"], report["capacity"]
    shape, target, turns = report["shape"], report["target"], report["turns"]
    verdict = "PASS" if slo["passed"] else "FAIL"
    lines = [
        f"# Load test: {verdict}",
        "",
        f"- target: {target['url']} (app `{target['app']}`, backends "
        f"{', '.join(f'{k}={v}' for k, v in (target.get('backends') or {}).items()) or '?'})",
        f"- shape: `{shape['spec']}` ({shape['duration_s']:.0f} s, up to {shape['max_users']} "
        f"users); personas: {', '.join(report['run']['personas'])}",
        f"- machine: {report['machine']['cpu']}, {report['machine']['cores']} cores "
        "(shared; figures are noisy)",
        f"- turns: {turns['completed']} completed of {turns['attempts']} "
        f"({_fmt(turns['turns_per_min'])} turns/min over the run)",
        f"- **max sustained turns/min within SLO: "
        f"{_fmt(cap['max_sustained_turns_per_min_within_slo'])}** "
        f"(at {_fmt(cap['at_users'])} users; {cap['windows_within_slo']}/{cap['windows']} "
        f"windows of {slo['window_s']:g} s within SLO; peak any window "
        f"{_fmt(cap['peak_turns_per_min_any'])})",
        "",
        "## SLO",
        "",
        "| objective | limit | value | |",
        "|---|---|---|---|",
    ]
    for c in slo["checks"]:
        value = c["value"]
        shown = _fmt(value, digits=4) if isinstance(value, float) else _fmt(value)
        mark = "ok" if c["passed"] else "**missed**"
        lines.append(f"| {c['objective']} | {c['op']} {c['limit']:g} | {shown} | {mark} |")
    lines += [
        "",
        "## Latency (s, from the end of the user's input)",
        "",
        "| | n | p50 | p95 | p99 | max |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in (
        ("ttfa", "time to first audio"),
        ("ttff", "time to first frame"),
        ("turn", "whole turn"),
    ):
        d = lat[name]
        lines.append(
            f"| {label} | {d['n']} | {_fmt(d['p50'])} | {_fmt(d['p95'])} | "
            f"{_fmt(d['p99'])} | {_fmt(d['max'])} |"
        )
    if len(report["per_persona"]) > 1:
        lines += [
            "",
            "| persona | completed | failed | TTFF p50 | TTFF p95 |",
            "|---|---|---|---|---|",
        ]
        for name, p in report["per_persona"].items():
            d = p["latency_s"]["ttff"]
            lines.append(
                f"| {name} | {p['completed']} | {p['attempts'] - p['completed']} | "
                f"{_fmt(d['p50'])} | {_fmt(d['p95'])} |"
            )
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    rl = fail["rejected_latency_s"]
    lines += [
        "",
        "## Failures",
        "",
        f"- 503 rejections (overload): {fail['rejected_503']} "
        f"(at connect {fail['rejected_at']['connect']}, before the reply "
        f"{fail['rejected_at']['before_reply']}, cutting a reply short "
        f"{fail['rejected_at']['mid_reply']}); refusals answered in p50 {_fmt(rl['p50'])} s, "
        f"max {_fmt(rl['max'])} s",
        f"- timeouts (no `done` within {slo['turn_timeout_s']:g} s): {fail['timeouts']}",
        f"- other errors: {fail['errors']}",
    ]
    for error, n in fail["by_error"].items():
        lines.append(f"  - `{error}`: {n}")
    lines += [
        "",
        "## Windows",
        "",
        "| t (s) | users | turns/min | TTFF p50 | TTFF p95 | 503 | timeouts | SLO |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for w in report["windows"]:
        ok = "ok" if w["within_slo"] else ", ".join(w["failed_objectives"])
        lines.append(
            f"| {w['start_s']:.0f}–{w['end_s']:.0f} | {w['users']} | "
            f"{_fmt(w['turns_per_min'])} | {_fmt(w['ttff_p50_s'])} | "
            f"{_fmt(w['ttff_p95_s'])} | {w['rejected_503']} | {w['timeouts']} | {ok} |"
        )
    summary = report["replicas"]["summary"]
    if summary:
        lines += [
            "",
            "## Replicas",
            "",
            "| deployment | replicas at start | max | end | max queued | max in flight |",
            "|---|---|---|---|---|---|",
        ]
        for name, s in summary.items():
            lines.append(
                f"| {name} | {_fmt(s.get('start'))} | {_fmt(s.get('max'))} | "
                f"{_fmt(s.get('end'))} | {_fmt(s.get('max_queued'))} | "
                f"{_fmt(s.get('max_ongoing'))} |"
            )
    lines += [
        "",
        "## Per-stage cost (for `avatar plan`)",
        "",
        "| stage | backend | s/call | calls/turn | s/turn | source |",
        "|---|---|---|---|---|---|",
    ]
    for stage, c in report["stage_costs"].items():
        per_call = _fmt(c.get("seconds_per_call"), digits=3)
        per_turn = _fmt(c.get("seconds_per_turn"), digits=3)
        lines.append(
            f"| {stage} | {c.get('backend') or '?'} | {per_call} | "
            f"{_fmt(c.get('calls_per_turn'))} | {per_turn} | {c.get('source', '–')} |"
        )
    if report["files"].get("png"):
        lines += ["", f"![latency and replicas]({Path(report['files']['png']).name})"]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """Latency, throughput and replicas over time, and latency/replicas against users."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    (ax_load, ax_lat), (ax_rep, ax_vs) = axes
    points = report["turn_points"]
    ok = [p for p in points if p[2] == "ok"]
    ttff_limit = next(
        (c["limit"] for c in report["slo"]["checks"] if c["objective"].startswith("ttff_p")), None
    )

    # Load and throughput: users, and cumulative turns by outcome.
    users = report["users"]
    if users:
        ax_load.plot([t for t, _ in users], [u for _, u in users], color="black", label="users")
    ax_load.set_ylabel("users")
    ax_load.set_xlabel("time (s)")
    ax_load.yaxis.set_major_locator(MaxNLocator(integer=True))
    twin = ax_load.twinx()
    for outcome, color, label in (
        ("ok", "tab:green", "completed"),
        ("rejected", "tab:red", "503"),
        ("timeout", "tab:purple", "timeouts"),
        ("error", "tab:gray", "errors"),
    ):
        times = [p[0] for p in points if p[2] == outcome]
        if times:
            twin.step(times, range(1, len(times) + 1), where="post", color=color, label=label)
    twin.set_ylabel("turns (cumulative)")
    twin.legend(loc="upper right", fontsize=8)
    ax_load.legend(loc="upper left", fontsize=8)
    ax_load.set_title("Load, and turns by outcome")

    # Latency of every completed turn, window p95, failures along the bottom.
    ax_lat.plot([p[0] for p in ok], [p[4] for p in ok], ".", alpha=0.5, label="TTFF (turn)")
    ax_lat.plot(
        [p[0] for p in ok], [p[3] for p in ok], "x", alpha=0.4, markersize=4, label="TTFA (turn)"
    )
    windows = [w for w in report["windows"] if w["ttff_p95_s"] is not None]
    if windows:
        xs = [x for w in windows for x in (w["start_s"], w["end_s"])]
        ax_lat.plot(
            xs,
            [w["ttff_p95_s"] for w in windows for _ in range(2)],
            color="tab:orange",
            label="TTFF p95 (window)",
        )
    if ttff_limit is not None:
        ax_lat.axhline(ttff_limit, color="red", linestyle=":", label="TTFF SLO")
    for outcome, marker, color, label in (
        ("rejected", "v", "tab:red", "503"),
        ("timeout", "X", "tab:purple", "timeout"),
    ):
        times = [p[0] for p in points if p[2] == outcome]
        if times:
            ax_lat.plot(times, [0] * len(times), marker, color=color, label=label, alpha=0.6)
    ax_lat.set_ylabel("seconds from end of input")
    ax_lat.set_xlabel("time (s)")
    ax_lat.set_ylim(bottom=-0.05 * max([ttff_limit or 1] + [p[4] or 0 for p in ok]))
    ax_lat.legend(loc="upper left", fontsize=8)
    ax_lat.set_title("Latency per turn")

    # Replicas per stage, and requests waiting in front of the stages.
    series = report["replicas"]["series"]
    times = [s["t"] for s in series]
    for name in (*STAGES, "router"):
        counts = [s.get("replicas", {}).get(name) for s in series]
        if any(c is not None for c in counts):
            ax_rep.step(times, counts, where="post", label=name, linewidth=2, alpha=0.8)
    ax_rep.set_ylabel("running replicas")
    ax_rep.set_xlabel("time (s)")
    ax_rep.yaxis.set_major_locator(MaxNLocator(integer=True))
    if any("queued" in s for s in series):
        twin = ax_rep.twinx()
        waiting = [sum(s.get("queued", {}).get(n, 0) for n in STAGES) for s in series]
        flight = [sum(s.get("ongoing", {}).get(n, 0) for n in STAGES) for s in series]
        twin.plot(times, waiting, color="black", linestyle="--", label="stage calls queued")
        twin.plot(times, flight, color="grey", linestyle=":", label="stage calls in flight")
        twin.set_ylabel("stage calls")
        twin.legend(loc="upper right", fontsize=8)
    ax_rep.legend(loc="upper left", fontsize=8)
    ax_rep.set_title("Replicas per stage and queue depth")

    # Against users: each turn's TTFF, window p95, and stage replicas at each sample.
    ax_vs.plot([p[1] for p in ok], [p[4] for p in ok], ".", alpha=0.4, label="TTFF (turn)")
    if windows:
        ax_vs.plot(
            [w["users"] for w in windows],
            [w["ttff_p95_s"] for w in windows],
            "o",
            color="tab:orange",
            label="TTFF p95 (window, at its peak users)",
        )
    if ttff_limit is not None:
        ax_vs.axhline(ttff_limit, color="red", linestyle=":")
    ax_vs.set_xlabel("users")
    ax_vs.set_ylabel("seconds")
    ax_vs.xaxis.set_major_locator(MaxNLocator(integer=True))
    sampled = [s for s in series if s.get("replicas") and s.get("users") is not None]
    if sampled:
        twin = ax_vs.twinx()
        twin.plot(
            [s["users"] for s in sampled],
            [sum(s["replicas"].get(n, 0) for n in STAGES) for s in sampled],
            "s",
            color="tab:brown",
            alpha=0.3,
            label="stage replicas (sample)",
        )
        twin.set_ylabel("stage replicas, all stages", color="tab:brown")
        twin.yaxis.set_major_locator(MaxNLocator(integer=True))
        twin.legend(loc="upper right", fontsize=8)
    ax_vs.legend(loc="upper left", fontsize=8)
    ax_vs.set_title("Latency and replicas vs users")

    verdict = "PASS" if report["slo"]["passed"] else "FAIL"
    fig.suptitle(f"avatar load test {report['shape']['spec']}: SLO {verdict}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Command line


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
        help="also run a local Prometheus (services.monitor) for PromQL figures",
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
        f"TTFF p50/p95/p99 {_fmt(lat['p50'])}/{_fmt(lat['p95'])}/{_fmt(lat['p99'])} s; "
        f"503s {fail['rejected_503']}, timeouts {fail['timeouts']}, errors {fail['errors']}; "
        f"max sustained {_fmt(cap['max_sustained_turns_per_min_within_slo'])} turns/min "
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


if __name__ == "__main__":
    sys.exit(main())
