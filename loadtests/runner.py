"""One bounded load test, end to end: cluster, clips, warm-up, sampler, locust, report.

`run_loadtest(RunOptions(...))` is what `avatar loadtest` and `python -m loadtests.run` call
(and what the serve smoke test drives against its own app). It starts the cluster itself
unless given a `url`, always stops what it started, and writes the report under `opts.out`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.clips import make_clips
from loadtests.cluster import (
    describe_target,
    metrics_interval_s,
    ray_connected,
    start_cluster,
    start_prometheus,
    stop_cluster,
    stop_prometheus,
)
from loadtests.errors import LoadTestError
from loadtests.locust_process import USER_CLASSES, read_history, read_stats, run_locust, warm_up
from loadtests.paths import FAKE_CONFIG, REPO, SLO_FILE
from loadtests.prom_sampler import Sampler, metrics_urls, prometheus_figures
from loadtests.report import build_report, write_outputs
from loadtests.shapes import Shape, ShapeError, Step, parse_shape
from loadtests.slo import Slo
from loadtests.stats import load_records


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


def _locust_env(
    opts: RunOptions, shape: Shape, slo: Slo, clips: Path, records: Path
) -> dict[str, str]:
    """What the locustfile reads from its environment (see its docstring)."""
    return {
        **os.environ,
        "AVATAR_LOADTEST_SHAPE": shape.spec(),
        "AVATAR_LOADTEST_CLIPS": str(clips),
        "AVATAR_LOADTEST_RECORDS": str(records),
        "AVATAR_LOADTEST_PERSONAS": ",".join(opts.personas),
        "AVATAR_LOADTEST_TURN_TIMEOUT_S": str(slo.turn_timeout_s),
        "AVATAR_LOADTEST_THINK_S": f"{opts.think_s[0]},{opts.think_s[1]}",
        "AVATAR_LOADTEST_REALTIME": "1" if opts.realtime else "0",
        "AVATAR_LOADTEST_WS_WEIGHT": str(opts.ws_weight),
        "AVATAR_LOADTEST_HTTP_WEIGHT": str(opts.http_weight),
        # locust puts only the locustfile's folder on sys.path; the users import `loadtests`.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }


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
        config, url = start_cluster(
            out,
            config_path=opts.config,
            fake_backends=opts.fake_backends,
            port=opts.port,
            num_cpus=opts.num_cpus,
        )
    else:
        url = opts.url.rstrip("/")
        if config is None and opts.config is not None:
            from services.core.config import load_app_config

            config = load_app_config(opts.config)
    app = opts.app or (config.name if config is not None else "avatar")
    monitor = None
    try:
        if opts.warmup:
            print(f"warm-up turn against {url} ...", flush=True)
            warmup_s = warm_up(url, sorted(clips.glob("*.wav"))[0], slo.turn_timeout_s)
            # Let the warm-up's metrics reach the exporter before the counters' baseline.
            time.sleep(metrics_interval_s() + 0.5)
        else:
            warmup_s = None
        serve_ok = ray_connected()
        urls = metrics_urls()
        if opts.prometheus:
            monitor = start_prometheus(urls, out)
        sampler = Sampler(app, urls, opts.sample_s, serve_ok)
        sampler.start()
        stop_timeout = opts.stop_timeout_s
        if stop_timeout is None:
            stop_timeout = min(slo.turn_timeout_s, 30.0)
        env = _locust_env(opts, shape, slo, clips, records_path)
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
            stop_prometheus(monitor)
        if started_cluster:
            stop_cluster()

    if not (out / "locust_stats.csv").exists():
        tail = (out / "locust.out").read_text(errors="replace")[-2000:]
        raise LoadTestError(f"locust exited with {exit_code} and wrote no stats:\n{tail}")
    report = build_report(
        records=load_records(records_path),
        history=read_history(out / "locust_stats_history.csv"),
        samples=sampler.rows,
        counters=sampler.counters.totals(),
        counter_series=sampler.counter_series,
        metrics_lag_s=metrics_interval_s(),
        slo=slo,
        shape=shape,
        t_start=t_start,
        t_end=t_end,
        target={
            "url": url,
            "app": app,
            "started_by_runner": started_cluster,
            "config": str(FAKE_CONFIG if opts.fake_backends else opts.config or "") or None,
            **describe_target(config),
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
