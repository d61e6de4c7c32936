"""Metrics, recording/alert rules and dashboards against a real Prometheus and the real app.

One module-scoped run: the fake app (on the shared Ray instance) with an ASR that fails every
other call and an LLM with one slot and a one-deep queue; Debian's `prometheus` on loopback
scraping Ray's metrics exporter every 2 s with the repo's rules (config written by
`services.commands.monitor`). Two batches of turns (completed, failed, rejected for
overload), so every counter and histogram has moved between two scrapes and `rate()` sees
it. Then everything is asked through Prometheus' HTTP API: every catalogue metric, every
rule, every dashboard query.
No Grafana server runs here; this is how the dashboards' PromQL is verified.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import math
import shutil
import time
from collections import Counter

import httpx
import numpy as np
import pytest

from services.commands import monitor
from services.core.audio import wav_bytes
from services.core.telemetry import METRICS
from tests.serve import observability as obs
from tests.serve.conftest import fake_app_config

pytestmark = [
    pytest.mark.serve,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="the `prometheus` binary is absent (apt-get install -y prometheus)",
    ),
]

APP = "obs"
SEL = f'application="{APP}"'
# FakeASR draws random() < 0.5 from Random(15): 0.97, 0.01, 0.74, 0.16 -> ok, fail, ok, fail:
# each batch's two audio turns are one completed and one failed turn.
ASR = {"backend": "fake", "options": {"failure_rate": 0.5, "seed": 15}}
# One LLM slot and a one-deep queue: of four simultaneous turns at least one is refused (503).
LLM = {"backend": "fake", "options": {"ttft_s": 0.5}}
LLM_DEPLOYMENT = {"max_ongoing_requests": 1, "max_queued_requests": 1}
# An autoscaled stage, so Serve exports its autoscaling gauges (target and desired replicas).
TTS_DEPLOYMENT = {"autoscaling_config": {"min_replicas": 1, "max_replicas": 1}}
WAIT_S = 45  # Ray pushes replica metrics to its exporter every ~10 s
# What the injected failures and rejections must trigger (pending: their `for` is minutes).
EXPECTED_ALERTS = {"AvatarTurnErrorRateHigh", "AvatarStageErrorRateHigh", "AvatarRequestsRejected"}


def final_event(url: str, **body) -> dict:
    response = httpx.post(f"{url}/v1/turn", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return json.loads(response.text.splitlines()[-1])


def outcome(event: dict) -> str:
    if event["type"] == "done":
        return "completed"
    return "rejected" if event.get("status") == 503 else "failed"


def drive_batch(url: str) -> Counter:
    """One text turn, two audio turns (one fails in ASR), four at once (>= 1 rejected)."""
    tone = 0.3 * np.sin(np.arange(16000) * 2 * np.pi * 220 / 16000)
    audio_b64 = base64.b64encode(wav_bytes(tone, 16000)).decode()
    outcomes = Counter([outcome(final_event(url, text="How fast are you?"))])
    outcomes.update(outcome(final_event(url, audio_b64=audio_b64)) for _ in range(2))
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        events = list(pool.map(lambda _: final_event(url, text="Hello there"), range(4)))
    outcomes.update(outcome(e) for e in events)
    assert outcomes["completed"] >= 2 and outcomes["failed"] >= 1, outcomes
    assert outcomes["rejected"] >= 1, outcomes
    return outcomes


class Prom:
    """The few Prometheus HTTP API calls the tests need.

    `at` (Unix time) pins every query to one instant: the fixture picks a moment at which all
    the turns' numbers are in Prometheus, so that a later hiccup (on 2 shared cores Ray's
    exporter sometimes misses a 2 s scrape, and the series go stale for a moment) cannot
    change what the tests see.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.at: float | None = None
        self.last_turn_at = 0.0  # time.monotonic() when the app last worked

    def get(self, path: str, **params) -> dict:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        body = response.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        params = {"query": expr} if self.at is None else {"query": expr, "time": self.at}
        data = self.get("/api/v1/query", **params)
        assert data["resultType"] == "vector", expr
        return data["result"]

    def value(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else 0.0

    def targets(self) -> list[tuple]:
        """Scrape health, for failure messages."""
        targets = self.get("/api/v1/targets")["activeTargets"]
        return [(t["scrapeUrl"], t["health"], t["lastError"], t["lastScrapeDuration"])
                for t in targets]  # fmt: skip


def series(prom: Prom, name: str) -> list[dict]:
    return prom.query(f"{name}{{{SEL}}}")


def by(prom: Prom, expr: str, label: str) -> dict[str, float]:
    return {s["metric"].get(label, ""): float(s["value"][1]) for s in prom.query(expr)}


def movable_totals(prom: Prom, template: str = "sum({})") -> dict[str, float]:
    """Per counter/histogram of the catalogue: `template` of its total (count) in app `obs`."""
    totals = {}
    for metric in METRICS:
        if metric.kind != "gauge":
            name = obs.exported_names(metric)[0 if metric.kind == "counter" else 1]
            totals[metric.name] = prom.value(template.format(f"{name}{{{SEL}}}"))
    # Serve's own request counter too: the HTTP 503 ratio rule divides by its rate, which is 0
    # (and the ratio NaN) unless Prometheus saw the first batch's count before the second's.
    totals["serve_http_requests"] = prom.value(
        template.format(f"ray_serve_num_http_requests_total{{{SEL}}}")
    )
    return totals


def wait_for(condition, what: str, timeout_s: float = WAIT_S, detail=lambda: ""):
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result or time.monotonic() > deadline:
            assert result, f"timed out after {timeout_s} s waiting for {what} {detail()}"
            return result
        time.sleep(0.5)


def alert_states(prom: Prom) -> dict[str, str]:
    """alertname -> pending/firing of the alerts active for app `obs`."""
    return {s["metric"]["alertname"]: s["metric"]["alertstate"]
            for s in prom.query(f"ALERTS{{{SEL}}}")}  # fmt: skip


def unsettled(prom: Prom, outcomes: Counter) -> list[str]:
    """What Prometheus does not show yet of the turns driven (empty once all is in).

    Replicas and the proxy push their metrics to Ray's exporter on their own ~10 s schedules,
    and rules are evaluated every 2 s: a moment after the turns, some numbers are in and
    others are not.
    """
    # Counters and histograms; whether gauges stay is a test of its own (they may vanish).
    waiting = [
        f"no {n}"
        for m in METRICS
        if m.kind != "gauge"
        for n in obs.exported_names(m)
        if not series(prom, n)
    ]
    turns = prom.value(f"sum(ray_avatar_turns_total{{{SEL}}})")
    if turns != sum(outcomes.values()):
        waiting.append(f"turns {turns} != {sum(outcomes.values())}")
    rejected = prom.value(f"sum(ray_avatar_requests_rejected_total{{{SEL}}})")
    if rejected != outcomes["rejected"]:
        waiting.append(f"rejected {rejected} != {outcomes['rejected']}")
    errors = prom.value(f"sum(ray_avatar_stage_errors_total{{{SEL}}})")
    if errors != outcomes["failed"]:
        waiting.append(f"stage errors {errors} != failed turns {outcomes['failed']}")
    requests = by(prom, f"sum by (stage) (ray_avatar_stage_requests_total{{{SEL}}})", "stage")
    latency = by(prom, f"sum by (stage) (ray_avatar_stage_latency_seconds_count{{{SEL}}})",
                 "stage")  # fmt: skip
    if len(requests) != 4 or latency != requests:
        waiting.append(f"stage calls {requests} != timed calls {latency}")
    http = by(prom, f"sum by (status_code) (ray_serve_num_http_requests_total{{{SEL}}})",
              "status_code")  # fmt: skip
    if http != {"200": sum(outcomes.values())}:
        waiting.append(f"HTTP responses {http}")
    waiting += [f"no {n}" for n in sorted(obs.SERVE_METRICS) if not series(prom, n)]
    waiting += [f"not recorded: {n}" for n in sorted(obs.recorded_names()) if not series(prom, n)]
    waiting += [
        f"not finite yet: {n}"
        for n in sorted(obs.recorded_names())
        if series(prom, n) and not any(math.isfinite(float(x["value"][1])) for x in series(prom, n))
    ]
    if set(alert_states(prom)) < EXPECTED_ALERTS:
        waiting.append(f"alerts {alert_states(prom)}")
    return waiting


@pytest.fixture(scope="module")
def observed(serve_instance, tmp_path_factory):
    """The app driven twice, and a Prometheus that has scraped it; yields a `Prom`."""
    import ray
    from ray import serve

    from deployments import ray_cluster

    port, state_dir = serve_instance
    config = fake_app_config(
        APP,
        port,
        state_dir,
        stages={"asr": ASR, "llm": LLM},
        serve={"llm": LLM_DEPLOYMENT, "tts": TTS_DEPLOYMENT},
        # Admit past the LLM's one slot, so Serve's own back-pressure (a mid-stream 503, the
        # `stage_overload` path) is what refuses; admission is tested in test_overload.py.
        limits={"max_turns_in_flight": 8},
    )
    url = ray_cluster.deploy(config, route_prefix=f"/{APP}")
    targets = [
        f"{node['NodeManagerAddress']}:{node['MetricsExportPort']}"
        for node in ray.nodes()
        if node["Alive"]
    ]
    data_dir = tmp_path_factory.mktemp("prometheus")
    # 2 s, not 1: Ray's exporter serves a few MB once several apps run, and a scrape may not
    # take longer than the interval.
    config_path = monitor.write_config(data_dir / "prometheus.yml", targets, scrape_interval="2s")
    process, prom_url = monitor.start_prometheus(config_path, data_dir, retention="1h")
    prom = Prom(prom_url)
    try:
        first = drive_batch(url)
        before = wait_for(
            lambda: (t := movable_totals(prom)) and all(t.values()) and t,
            "every counter and histogram of the first batch in Prometheus",
            detail=lambda: f"(outcomes {first}; now {movable_totals(prom)}; {prom.targets()})",
        )
        assert before["avatar_turns"] <= sum(first.values())
        second = drive_batch(url)
        prom.last_turn_at = time.monotonic()
        outcomes = first + second

        def settled() -> bool:
            # Judge one instant Prometheus has certainly scraped past (an interval ago). rate()
            # needs the second batch seen as growth over the first: totals up, rates > 0.
            prom.at = time.time() - 2
            return (
                all(v > before[k] for k, v in movable_totals(prom).items())
                and all(movable_totals(prom, "sum(rate({}[5m]))").values())
                and not unsettled(prom, outcomes)
            )

        wait_for(
            settled,
            "every replica's and the proxy's metrics of both batches",
            detail=lambda: f"({outcomes}; {unsettled(prom, outcomes)}; {prom.targets()})",
        )
        yield prom
    finally:
        monitor.stop_prometheus(process)
        serve.delete(APP)


@pytest.mark.parametrize("metric", METRICS, ids=lambda m: m.name)
def test_every_catalogue_metric_is_exported_with_bounded_labels(observed, metric):
    for name in obs.exported_names(metric):
        found = series(observed, name)
        assert found, f"{name} is not in Prometheus"
        for s in found:
            labels = s["metric"]
            assert set(metric.labels) <= set(labels), (name, labels)
            # Ray's `SessionName` is the Ray cluster's run, not a conversation session.
            assert not {k for k in labels if "session" in k.lower()} - {"SessionName"}, labels
            assert not [k for k in labels if k.startswith("otel_scope")], "relabelling failed"
            assert labels["deployment"] in ("asr", "llm", "tts", "render", "router")
            value = float(s["value"][1])
            assert math.isfinite(value) and value >= 0, (name, labels, value)


def test_stage_metrics_cover_every_stage(observed):
    stages = {"asr", "llm", "tts", "render"}
    requests = by(observed, f"sum by (stage) (ray_avatar_stage_requests_total{{{SEL}}})", "stage")
    assert set(requests) == stages and all(v > 0 for v in requests.values()), requests
    latency = by(
        observed, f"sum by (stage) (ray_avatar_stage_latency_seconds_count{{{SEL}}})", "stage"
    )
    assert latency == requests  # one observation per call, failed calls included
    errors = by(observed, f"sum by (stage) (ray_avatar_stage_errors_total{{{SEL}}})", "stage")
    assert errors == {"asr": 2.0}  # the two injected ASR failures, nothing else
    in_flight = by(observed, f"max by (stage) (ray_avatar_stage_in_flight{{{SEL}}})", "stage")
    assert set(in_flight) == stages and set(in_flight.values()) == {0.0}  # all calls finished
    backends = {s["metric"]["backend"] for s in series(observed, "ray_avatar_stage_requests_total")}
    assert backends == {"fake"}


def test_turn_outcomes_rejections_and_sessions(observed):
    turns = by(observed, f"sum by (status) (ray_avatar_turns_total{{{SEL}}})", "status")
    assert set(turns) == {"completed", "failed", "rejected"}
    assert turns["failed"] == 2.0 and turns["completed"] >= 4 and turns["rejected"] >= 2
    rejected = by(
        observed, f"sum by (reason) (ray_avatar_requests_rejected_total{{{SEL}}})", "reason"
    )
    assert rejected == {"stage_overload": turns["rejected"]}
    personas = {s["metric"]["persona"] for s in series(observed, "ray_avatar_turns_total")}
    assert personas == {"default"}
    # Every turn opened a session; the router reports the store's count every 5 s.
    assert 1 <= observed.value(f"max(ray_avatar_sessions_active{{{SEL}}})") <= sum(turns.values())


def histogram(prom: Prom, metric) -> tuple[dict[float, float], float, float]:
    name = obs.RAY_PREFIX + metric.name
    buckets = by(prom, f"sum by (le) ({name}_bucket{{{SEL}}})", "le")
    count = prom.value(f"sum({name}_count{{{SEL}}})")
    total = prom.value(f"sum({name}_sum{{{SEL}}})")
    return {float(le): v for le, v in buckets.items()}, count, total


@pytest.mark.parametrize(
    "metric", [m for m in METRICS if m.kind == "histogram"], ids=lambda m: m.name
)
def test_histograms_have_the_catalogue_buckets_and_sane_values(observed, metric):
    buckets, count, total = histogram(observed, metric)
    assert sorted(buckets) == sorted((*map(float, metric.buckets), math.inf))
    cumulative = [buckets[le] for le in sorted(buckets)]
    assert cumulative == sorted(cumulative), "buckets must be cumulative"
    assert buckets[math.inf] == count > 0
    mean = total / count
    assert mean > 0 and math.isfinite(mean)
    if metric.name.endswith("_seconds"):
        assert mean <= max(metric.buckets), f"mean {mean} s beyond the last bucket"


def test_turn_timings_are_consistent(observed):
    def mean(name: str) -> float:
        count = observed.value(f"sum(ray_avatar_{name}_count{{{SEL}}})")
        return observed.value(f"sum(ray_avatar_{name}_sum{{{SEL}}})") / count

    first_audio = mean("turn_time_to_first_audio_seconds")
    first_frame = mean("turn_time_to_first_frame_seconds")
    total = mean("turn_latency_seconds")
    assert 0 < first_audio <= total and 0 < first_frame <= total
    # Audio and frames of a fake turn line up to a frame or so.
    assert mean("turn_av_sync_offset_seconds") < 0.2


def test_serve_builtin_metrics_used_by_dashboards_and_rules_exist(observed):
    for name in sorted(obs.SERVE_METRICS):
        assert series(observed, name), f"Serve does not export {name}"
    healthy = by(
        observed, f"sum by (deployment) (ray_serve_deployment_replica_healthy{{{SEL}}})",
        "deployment",
    )  # fmt: skip
    assert healthy == {d: 1.0 for d in ("asr", "llm", "tts", "render", "router")}
    desired = series(observed, "ray_serve_autoscaling_desired_replicas")
    assert {s["metric"]["deployment"] for s in desired} == {"tts"}  # the autoscaled one
    queued = by(
        observed, f"sum by (deployment) (ray_serve_deployment_queued_queries{{{SEL}}})",
        "deployment",
    )  # fmt: skip
    assert queued == {d: 0.0 for d in ("asr", "llm", "tts", "render", "router")}
    # Every turn, rejected ones included, was one HTTP request answered 200.
    http = by(
        observed, f"sum by (status_code) (ray_serve_num_http_requests_total{{{SEL}}})",
        "status_code",
    )  # fmt: skip
    assert http == {"200": observed.value(f"sum(ray_avatar_turns_total{{{SEL}}})")}


def test_every_rule_loads_evaluates_and_records(observed):
    groups = [g for g in observed.get("/api/v1/rules")["groups"] if g["rules"]]
    loaded = {(g["file"].rsplit("/", 1)[-1], g["name"]) for g in groups}
    expected = {
        (path.name, group["name"])
        for path, file_groups in obs.load_rule_groups().items()
        for group in file_groups
    }
    assert loaded == expected
    for group in groups:
        for rule in group["rules"]:
            assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
    for name in sorted(obs.recorded_names()):
        values = [float(s["value"][1]) for s in series(observed, name)]
        assert any(math.isfinite(v) for v in values), (name, values)


def test_alerts_fire_on_the_injected_failures_only(observed):
    # 1 turn in 7 fails in ASR and >= 1 in 7 is rejected: over those alerts' thresholds
    # (pending, as their `for` is minutes). The SLO and capacity alerts stay quiet.
    states = alert_states(observed)
    assert set(states) == EXPECTED_ALERTS, states
    assert set(states.values()) == {"pending"}


@pytest.mark.parametrize("path", sorted(obs.DASHBOARDS_DIR.glob("*.json")), ids=lambda p: p.name)
def test_every_dashboard_query_returns_data(observed, path):
    dashboard = json.loads(path.read_text())
    for name, expr in obs.variable_queries(dashboard):
        values = {s["metric"].get(name) for s in observed.query(obs.substitute(expr, dashboard))}
        assert APP in values or name != "application", (name, values)
        assert values, f"variable {name} has no values: {expr}"
    empty = []
    for where, expr in obs.panel_exprs(dashboard):
        query = obs.substitute(expr, dashboard)
        result = observed.query(query)  # asserts Prometheus parsed and ran it
        if not any(math.isfinite(float(s["value"][1])) for s in result):
            empty.append(f"{where}: {query} -> {result}")
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_gauges_stay_exported_while_the_app_idles(observed):
    # Ray drops a gauge from its exporter 20-30 s after its last set(): a gauge set only on
    # activity disappears from Prometheus when the stage idles, and dashboards and alerts read
    # "no data" instead of 0. Runs last: waits until the app has idled 35 s, then looks "now"
    # (a few tries: one missed scrape must not count as a vanished gauge).
    time.sleep(max(0.0, observed.last_turn_at + 35 - time.monotonic()))
    observed.at = None
    for metric in (m for m in METRICS if m.kind == "gauge"):
        name = obs.exported_names(metric)[0]
        wait_for(lambda n=name: series(observed, n), f"{name} after 35 s without turns", 10)
