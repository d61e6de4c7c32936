"""Watching Serve while the load runs: replica counts, queue depth and stage counters.

A `Sampler` thread reads `serve.status()` and scrapes Ray's metrics exporters (Prometheus text
format) every few seconds; counters are turned into increases over the run that survive
replicas coming and going. With `--prometheus`, `prometheus_figures` asks a local Prometheus
for the server-side quantiles a dashboard would show.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

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
        from services.commands.monitor import discover_targets

        return [f"http://{t}/metrics" for t in discover_targets()]
    except ImportError:
        return []


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
