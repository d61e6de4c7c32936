"""The cluster under load: starting it for a run, and what it runs (for the report).

`start_cluster` brings up Ray and the app from a config with the database kept in the report
folder; `describe_target` reads the backends, backend options and Serve options of each stage
from the `AppConfig`, so a report says what it measured and the planner can size replicas.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from loadtests.paths import FAKE_CONFIG, LOCAL_CONFIG
from loadtests.stage_costs import STAGES

# Ray's own (lower-case) setting: how often each process exports its metrics.
RAY_METRICS_INTERVAL_ENV = "RAY_metrics_report_interval_ms"


def start_cluster(
    out: Path,
    *,
    config_path: Path | None = None,
    fake_backends: bool = False,
    port: int | None = None,
    num_cpus: int | None = None,
):
    """Start Ray + the app from a config, with session state kept inside the report folder.

    Returns (the `AppConfig` it runs, its base URL).
    """
    from deployments import ray_cluster
    from services.core.config import load_app_config

    config = load_app_config(FAKE_CONFIG if fake_backends else config_path or LOCAL_CONFIG)
    config = config_for_run(config, out, port)
    # Finer metric exports than Ray's 10 s default, so queue depth is seen while it happens.
    os.environ.setdefault(RAY_METRICS_INTERVAL_ENV, "2000")
    try:
        url = ray_cluster.start(config, num_cpus=num_cpus)
    except Exception:
        ray_cluster.stop()
        raise
    return config, url


def config_for_run(config, out: Path, port: int | None = None):
    """A copy of `config` serving on loopback whose database is one SQLite file in `out`.

    The run's sessions and audit log stay next to its report instead of mixing with the
    user's own (a configured database URL, or `$url_env`, still takes precedence).
    """
    storage = config.storage.model_copy(update={"sqlite_path": str(out / "avatar.sqlite3")})
    http = config.http.model_copy(update={"host": "127.0.0.1", "port": port or config.http.port})
    return config.model_copy(update={"storage": storage, "http": http})


def stop_cluster() -> None:
    from deployments import ray_cluster

    ray_cluster.stop()


def metrics_interval_s() -> float:
    """How often Ray exports metrics (its default 10 s unless this process set it)."""
    try:
        return float(os.environ.get(RAY_METRICS_INTERVAL_ENV, "10000")) / 1000
    except ValueError:
        return 10.0


def ray_connected() -> bool:
    try:
        import ray

        return ray.is_initialized()
    except ImportError:
        return False


def start_prometheus(urls: list[str], out: Path):
    """A local Prometheus scraping the exporters, or None (the run goes on without it)."""
    from services.commands.monitor import MonitorError, start_prometheus, write_config

    targets = [u.split("//", 1)[1].split("/", 1)[0] for u in urls]
    try:
        config = write_config(out / "prometheus" / "prometheus.yml", targets, scrape_interval="2s")
        return start_prometheus(config, out / "prometheus")
    except MonitorError as exc:
        print(f"prometheus: not used ({exc})", flush=True)
        return None


def stop_prometheus(monitor) -> None:
    from services.commands.monitor import stop_prometheus

    stop_prometheus(monitor[0])


def describe_target(config) -> dict[str, Any]:
    """Per stage: its backend, that backend's options, and each deployment's Serve options.

    All None without a config (a `--url` target given no `--config`).
    """
    if config is None:
        return {"backends": None, "deployments": None, "stage_options": None}
    return {
        "backends": {s: config.stage(s).backend for s in STAGES},
        "deployments": {
            name: config.deployment(name).serve_options() for name in (*STAGES, "router")
        },
        # JSON mode: the report is written as JSON, and options may hold paths.
        "stage_options": {s: config.stage(s).options.model_dump(mode="json") for s in STAGES},
    }
