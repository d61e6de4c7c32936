"""Run the app on a local Ray instance: what `avatar serve` and the serve tests do.

Ray on one machine: loopback only, no dashboard, no usage stats.
"""

from __future__ import annotations

import os
import socket
import time

from services.core.config import AppConfig


def init_ray(
    config: AppConfig, *, num_cpus: int | None = None, metrics_export_port: int | None = None
) -> None:
    """Start a local Ray instance and Serve's HTTP proxy on `config.http`.

    `metrics_export_port` None lets Ray pick; `avatar monitor` finds it in the Ray session.
    """
    # Keep Ray on loopback (it would otherwise advertise the eth0 address) and offline.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    if not ray.is_initialized():
        # Serve reads these once, in the processes Ray starts now (they inherit this env).
        os.environ.update(ingress_env(config))
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            _metrics_export_port=metrics_export_port,
            logging_level="WARNING",
        )
    serve.start(http_options={"host": config.http.host, "port": config.http.port})


def ingress_env(config: AppConfig) -> dict[str, str]:
    """Ray Serve's env for `http.ingress`: direct ingress behind HAProxy, or its Python proxy.

    With `haproxy` a request costs one Python hop (the router replica) instead of two (proxy,
    then router): `loadtests.bench_overload` compares both. HAProxy's stats and metrics ports
    are fixed by env (8404, 9101 by default, on every interface): two local Ray instances (a
    test beside `avatar serve`) would collide, so each gets free ones unless the env names them.
    """
    on = "1" if config.http.ingress == "haproxy" else "0"
    env = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": on, "RAY_SERVE_ENABLE_HA_PROXY": on}
    if on == "1":
        for name in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"):
            env[name] = os.environ.get(name) or str(_free_port())
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))  # HAProxy binds these on every interface
        return s.getsockname()[1]


def deploy(config: AppConfig, *, route_prefix: str = "/", wait_ready_s: float = 300) -> str:
    """Deploy (or update) the app and wait until it runs; returns its base URL."""
    from ray import serve

    from deployments.app import bind_app

    serve.run(
        bind_app(config),
        name=config.name,
        route_prefix=route_prefix,
        blocking=False,
    )
    deadline = time.monotonic() + wait_ready_s
    while time.monotonic() < deadline:
        status = serve.status().applications.get(config.name)
        if status is not None and status.status == "RUNNING":
            return f"http://{config.http.host}:{config.http.port}{route_prefix.rstrip('/')}"
        if status is not None and status.status == "DEPLOY_FAILED":
            raise RuntimeError(f"the app failed to deploy: {status.message}")
        time.sleep(0.5)
    raise TimeoutError(f"the app was not running after {wait_ready_s} s")


def start(
    config: AppConfig, *, num_cpus: int | None = None, metrics_export_port: int | None = None
) -> str:
    """Ray + Serve + the app; returns the base URL once every stage is running."""
    init_ray(config, num_cpus=num_cpus, metrics_export_port=metrics_export_port)
    return deploy(config)


def stop() -> None:
    import ray
    from ray import serve

    if not ray.is_initialized():
        return  # stopped already: serve.shutdown() would start a new Ray just to stop it
    try:
        serve.shutdown()
    finally:
        ray.shutdown()
