"""`avatar serve`: the avatar cluster on a local Ray instance, until Ctrl-C.

Registered in `services.commands.main.COMMANDS` by name, so the `avatar` command reaches it
without `services` importing `deployments`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from services.core.config import load_app_config


def add_serve_command(sub) -> None:
    cmd = sub.add_parser("serve", help="run the avatar cluster on a local Ray instance")
    cmd.add_argument("--config", type=Path, help="app config YAML (default: the local config)")
    cmd.add_argument("--host", help="bind address (default from config: 127.0.0.1)")
    cmd.add_argument("--port", type=int, help="HTTP port (default from config: 8000)")
    cmd.add_argument("--num-cpus", type=int, help="logical CPUs Ray may schedule")
    cmd.add_argument(
        "--metrics-port",
        type=int,
        help="Ray metrics exporter port (default: Ray picks; `avatar monitor` finds it)",
    )
    cmd.set_defaults(func=_serve)


def default_app_config_path() -> Path:
    return Path(__file__).parent / "configs" / "local.yaml"


def _serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from deployments import ray_cluster

    config = load_app_config(args.config or default_app_config_path())
    http = config.http.model_copy(
        update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    )
    config = config.model_copy(update={"http": http})
    print(f"starting the avatar cluster ({config.name}) on a local Ray instance ...", flush=True)
    url = ray_cluster.start(config, num_cpus=args.num_cpus, metrics_export_port=args.metrics_port)
    print(f"avatar cluster ready: {url}  (API docs: {url}/docs; Ctrl-C stops it)", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping ...", flush=True)
        ray_cluster.stop()
    return 0
