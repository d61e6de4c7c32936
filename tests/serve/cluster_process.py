"""An app in its own process with its own Ray, like `avatar serve`: for tests that need a Ray
started differently from the session's shared instance (another `http.ingress`, a browser's
cluster). The process stops Ray and exits when its stdin closes."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from services.core.config import AppConfig

REPO = Path(__file__).resolve().parents[2]
SERVER = """
import sys
from deployments import ray_cluster
from services.core.config import AppConfig
config = AppConfig.model_validate_json(sys.argv[1])
ray_cluster.init_ray(config, num_cpus=4)
print("URL", ray_cluster.deploy(config, route_prefix=sys.argv[2]), flush=True)
sys.stdin.readline()
ray_cluster.stop()
"""


@contextlib.contextmanager
def cluster_process(
    config: AppConfig, prefix: str, log_path: Path, start_timeout_s: float = 300
) -> Iterator[str]:
    """Start the app at `prefix` in a child process (stderr to `log_path`); yields its URL."""
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, config.model_dump_json(), prefix],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=REPO,
    )
    found: list[str] = []
    reader = threading.Thread(
        target=lambda: found.extend(line for line in proc.stdout if line.startswith("URL ")),
        daemon=True,
    )
    reader.start()
    deadline = time.monotonic() + start_timeout_s
    while not found and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    try:
        if not found:
            raise AssertionError(f"the cluster did not start; see {log_path}")
        yield found[0].split()[1]
    finally:
        try:
            proc.stdin.close()  # the server stops Ray and exits
            proc.wait(timeout=90)
        except (subprocess.TimeoutExpired, OSError):
            proc.kill()
            proc.wait(timeout=30)
        log.close()
