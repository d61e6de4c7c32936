"""`avatar monitor`: a local Prometheus that scrapes the local avatar cluster.

Everything the cluster records (Serve's queue, replica and autoscaling metrics and the app's
`ray_avatar_*` catalogue from `services.core.telemetry`) is exported by Ray's metrics exporter, one
port per Ray node. This module finds that port in the latest local Ray session (or takes
`--target`), writes a Prometheus config from the checked-in template
`infra/prometheus/prometheus.yml` with the repo's rules (`infra/prometheus/rules/*.yaml`; both
shipped inside the package as `services/commands/prometheus`), starts
Debian's `prometheus` binary on loopback and prints the query URL.

`add_monitor_command(subparsers)` adds the `monitor` command to an argparse subparsers object;
`write_config` and `start_prometheus` are what the observability tests use too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import yaml

# Package data: `services/commands/prometheus` links to the repo's infra/prometheus, and the
# wheel (and the container image) carries a copy, so this works from an installed package too.
PROMETHEUS_DIR = Path(str(resources.files("services.commands") / "prometheus"))
CONFIG_TEMPLATE = PROMETHEUS_DIR / "prometheus.yml"
RULES_DIR = PROMETHEUS_DIR / "rules"
# Ray's metrics port in the Helm chart (the pods' `metrics` port) and in the checked-in config.
DEFAULT_TARGET = "127.0.0.1:8080"
DEFAULT_DATA_DIR = Path("~/.cache/avatar-serve/prometheus")
INSTALL_HINT = "install it with `apt-get install -y prometheus` (Debian/Ubuntu)"


class MonitorError(RuntimeError):
    """Prometheus could not be configured or started; the message says why."""


def ray_session_dir() -> Path:
    """The latest local Ray session directory (Ray's own rule: $RAY_TMPDIR or /tmp, + /ray)."""
    return Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "session_latest"


def _listening(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def discover_targets(session_dir: Path | None = None) -> list[str]:
    """`host:port` of every live Ray metrics exporter of the latest local Ray session.

    Ray writes one `metrics_export_port_<node id>` file per node it starts on this machine;
    ports nobody listens on any more (a stopped cluster) are left out.
    """
    session_dir = session_dir or ray_session_dir()
    targets = []
    for path in sorted(session_dir.glob("metrics_export_port_*")):
        try:
            port = int(path.read_text().strip())
        except (OSError, ValueError):
            continue
        if _listening("127.0.0.1", port):
            targets.append(f"127.0.0.1:{port}")
    return targets


def write_config(
    path: Path,
    targets: Sequence[str],
    *,
    scrape_interval: str = "5s",
    evaluation_interval: str | None = None,
    rules_dir: Path | None = RULES_DIR,
    template: Path = CONFIG_TEMPLATE,
) -> Path:
    """Write a Prometheus config scraping `targets` (Ray metrics `host:port`s) to `path`.

    The template's scrape job `ray` gets the targets; the intervals and the rule path are
    replaced (absolute, so the config works from any directory); the rest (relabelling,
    external labels) is kept, so the checked-in file stays the one place to change them.
    """
    if not targets:
        raise MonitorError("no scrape target: give at least one Ray metrics host:port")
    try:
        config = yaml.safe_load(template.read_text())
    except OSError as exc:
        raise MonitorError(
            f"cannot read the Prometheus config template {template}: {exc}"
        ) from None
    config["global"]["scrape_interval"] = scrape_interval
    config["global"]["evaluation_interval"] = evaluation_interval or scrape_interval
    config["rule_files"] = [str(Path(rules_dir).resolve() / "*.yaml")] if rules_dir else []
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "ray"]
    job["static_configs"] = [{"targets": list(targets)}]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Written by services/commands/monitor.py from {template.name}; edit that file instead.\n"
    )
    path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def start_prometheus(
    config_path: Path,
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    binary: str | None = None,
    retention: str = "15d",
    ready_timeout_s: float = 30.0,
) -> tuple[subprocess.Popen, str]:
    """Start Prometheus with `config_path`, storing into `data_dir`; returns (process, URL).

    Returns once Prometheus answers `/-/ready`. Its log goes to `data_dir/prometheus.log`.
    Stop it with `stop_prometheus`. `port=None` picks a free one.
    """
    found = shutil.which(binary or "prometheus")
    if found is None:
        raise MonitorError(f"no `{binary or 'prometheus'}` binary: {INSTALL_HINT}")
    port = port or free_port(host)
    if _listening(host, port, timeout_s=0.2):
        raise MonitorError(f"{host}:{port} is in use: pick another port with --port")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "prometheus.log"
    command = [
        found,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={data_dir / 'tsdb'}",
        f"--storage.tsdb.retention.time={retention}",
        f"--web.listen-address={host}:{port}",
        # Lets a user (or a test) reload changed rules with POST /-/reload instead of a restart.
        "--web.enable-lifecycle",
        "--log.level=warn",
    ]
    with open(log_path, "ab") as log:
        # Own session: Ctrl-C in the terminal reaches `avatar monitor`, which stops Prometheus
        # itself, instead of killing both halfway.
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise MonitorError(
                f"prometheus exited with status {process.returncode}: {_log_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                if response.status == 200:
                    return process, url
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    stop_prometheus(process)
    raise MonitorError(f"prometheus was not ready after {ready_timeout_s} s: {_log_tail(log_path)}")


def stop_prometheus(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM (Prometheus flushes its head block), SIGKILL if it does not exit in time."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def add_monitor_command(subparsers) -> None:
    """Add `avatar monitor` to an argparse subparsers object (`func(args) -> exit code`)."""
    cmd = subparsers.add_parser(
        "monitor",
        help="run a local Prometheus scraping the local avatar cluster",
        description="Start Prometheus on loopback against the local cluster's Ray metrics "
        "exporter (found in the latest Ray session, or --target), with the repo's recording "
        "and alert rules, and print the query URL. Ctrl-C stops it.",
    )
    cmd.add_argument(
        "--target",
        action="append",
        metavar="HOST:PORT",
        help="Ray metrics exporter to scrape (repeatable; default: the running local Ray "
        f"session's, else {DEFAULT_TARGET})",
    )
    cmd.add_argument("--host", default="127.0.0.1", help="Prometheus bind address")
    cmd.add_argument("--port", type=int, default=9090, help="Prometheus port (default 9090)")
    cmd.add_argument(
        "--scrape-interval", default="5s", help="scrape and rule interval (default 5s)"
    )
    cmd.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"config, TSDB and log directory (default {DEFAULT_DATA_DIR})",
    )
    cmd.add_argument(
        "--config-only",
        action="store_true",
        help="write the Prometheus config, print its path and exit (for your own Prometheus)",
    )
    cmd.set_defaults(func=run_monitor)


def run_monitor(args: argparse.Namespace) -> int:
    """The `avatar monitor` command."""
    data_dir = Path(args.data_dir).expanduser()
    targets = args.target or discover_targets()
    if not targets:
        print(
            f"no running local Ray cluster found under {ray_session_dir()}; scraping "
            f"{DEFAULT_TARGET} (start the cluster with `avatar serve`, or pass --target)",
            flush=True,
        )
        targets = [DEFAULT_TARGET]
    config = write_config(
        data_dir / "prometheus.yml", targets, scrape_interval=args.scrape_interval
    )
    if args.config_only:
        print(config)
        return 0
    process, url = start_prometheus(config, data_dir, host=args.host, port=args.port)
    print(f"Prometheus {url} scraping Ray metrics at {', '.join(targets)}", flush=True)
    print(f"query: {url}/graph   alerts: {url}/alerts   targets: {url}/targets", flush=True)
    print(f"API:   {url}/api/v1/query?query=ray_avatar_turns_total   (Ctrl-C stops it)", flush=True)
    stopped = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        while not stopped.is_set() and process.poll() is None:
            stopped.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_prometheus(process)
    if not stopped.is_set() and process.returncode not in (0, -signal.SIGTERM, None):
        print(f"prometheus exited: {_log_tail(data_dir / 'prometheus.log')}", flush=True)
        return 1
    return 0
