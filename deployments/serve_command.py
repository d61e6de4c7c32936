"""`avatar serve`: the avatar cluster on a local Ray instance, until Ctrl-C.

Registered in `services.commands.main.COMMANDS` by name, so the `avatar` command reaches it
without `services` importing `deployments`.

Authentication (`auth.mode` in the config): on loopback `auto` runs open - local development
stays one command - and says so loudly; on any other address it needs API keys, and `open` there
is refused unless the config sets `auth.allow_open_network`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from services.core.config import AppConfig, load_app_config

OPEN_WARNING = """\
************************************************************************************
  WARNING: authentication is OFF (auth.mode {mode} on {host}): no API keys are checked.
  Anyone who reaches this port may talk to every persona and read every session.
  For anything but local development use auth.mode keys and `avatar keys create`.
************************************************************************************"""


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
    announce_auth(config)
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


def announce_auth(config: AppConfig) -> str:
    """The auth mode in force; a loud warning when open, a hint when no key exists yet.
    ValueError (before anything starts) for open on a non-loopback address."""
    mode = config.auth_mode()
    if mode == "open":
        print(OPEN_WARNING.format(mode=config.auth.mode, host=config.http.host), file=sys.stderr)
        return mode
    from services.storage.database import open_storage

    with open_storage(config.storage) as storage:
        active = storage.keys.list(include_revoked=False)
    print(f"API keys required ({len(active)} active).", flush=True)
    if not active and not os.environ.get(config.auth.bootstrap_key_env):
        print(
            "no API key exists yet: create one with `avatar keys create --tenant NAME "
            "--config FILE` (same config, same database)",
            file=sys.stderr,
        )
    return mode
