"""Locust in a subprocess: run it bounded, read its CSVs, and warm the target up first.

Locust monkey-patches the process with gevent on import, which Ray does not survive, so the
runner never imports it: it starts `locust -f loadtests/locustfile.py --headless` in its own
process group and kills it if it outlives the shape.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from loadtests.errors import LoadTestError
from loadtests.paths import LOCUSTFILE, REPO
from loadtests.shapes import Shape

USER_CLASSES = {"ws": "ConversationUser", "http": "HttpTurnUser"}
# Locust's own start-up and shutdown on a busy 2-core machine; beyond this it is hung.
LOCUST_GRACE_S = 90.0


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
