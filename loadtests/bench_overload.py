"""Overload at admission: N simultaneous turns at a cluster sized for 4; prints JSON.

Fake backends (seconds-long turns, no models) on a local Ray Serve app whose stages each take
4 requests at once, so the router admits 4 turns and must refuse the rest at the start (HTTP
503 + Retry-After) instead of queueing them or failing them mid-stream. Reports admitted and
rejected turns, the rejections' latency (request sent -> status received) p50/p95, turns that
failed mid-stream (an `error` event after a 200: must be 0) and the machine.

    python -m loadtests.bench_overload [--turns 40] [--port 8011]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from loadtests.bench_pipeline import percentile
from loadtests.machine import describe
from services.core.config import AppConfig

SLOTS = 4  # requests each stage takes at once: the cluster is sized for 4 concurrent turns


def overload_config(name: str, port: int, state_dir: Path, small_cpu: float = 0.05) -> AppConfig:
    """Fake stages of one replica x `SLOTS` requests; turns of ~2 s; a router that can hold
    every request (so refusals are the app's admission, not Serve's proxy queue)."""
    stage = {"num_replicas": 1, "max_ongoing_requests": SLOTS, "max_queued_requests": -1}
    actor = {"ray_actor_options": {"num_cpus": small_cpu}}
    options = {
        "asr": {"latency_s": 0.1},
        "llm": {"ttft_s": 1.0, "per_token_s": 0.01},
        "tts": {"latency_s": 0.1, "rtf": 0.05},
        "render": {"width": 32, "height": 32},
    }
    return AppConfig(
        name=name,
        stages={
            s: {"backend": "fake", "options": o, "serve": {**stage, **actor}}
            for s, o in options.items()
        },
        router={"serve": {"max_ongoing_requests": 256, "max_queued_requests": -1, **actor}},
        http={"host": "127.0.0.1", "port": port},
        storage={"sqlite_path": str(state_dir / f"{name}.sqlite3")},
        personas={"embedder": "hashing", "index_dir": str(state_dir / f"{name}-index")},
    )


def one_turn(url: str, start: threading.Barrier) -> dict:
    """One text turn: its HTTP status, when the status came, and how the stream ended."""
    start.wait()
    sent = time.perf_counter()
    with httpx.stream("POST", f"{url}/v1/turn", json={"text": "Hello"}, timeout=120) as response:
        status_s = time.perf_counter() - sent
        lines = [line for line in response.iter_lines() if line.strip()]
    last = json.loads(lines[-1]) if lines else {}
    return {
        "status": response.status_code,
        "status_s": status_s,
        "retry_after": response.headers.get("retry-after"),
        "final": last.get("type") if response.status_code == 200 else None,
        "final_status": last.get("status"),
        "wall_s": time.perf_counter() - sent,
    }


def overload(url: str, turns: int) -> dict:
    """Fire `turns` turns at once at `url`; the figures of the run (see the module docstring)."""
    barrier = threading.Barrier(turns)
    with concurrent.futures.ThreadPoolExecutor(max_workers=turns) as pool:
        results = list(pool.map(lambda _: one_turn(url, barrier), range(turns)))
    admitted = [r for r in results if r["status"] == 200]
    rejected = [r for r in results if r["status"] == 503]
    latencies = sorted(r["status_s"] for r in rejected)
    return {
        "turns": turns,
        "admitted": len(admitted),
        "completed": sum(r["final"] == "done" for r in admitted),
        "mid_stream_failures": sum(r["final"] != "done" for r in admitted),
        "rejected": len(rejected),
        "rejected_with_retry_after": sum(r["retry_after"] is not None for r in rejected),
        "other_statuses": sorted({r["status"] for r in results} - {200, 503}),
        "rejection_latency_p50_ms": round(1000 * statistics.median(latencies), 1)
        if latencies
        else None,
        "rejection_latency_p95_ms": round(1000 * percentile(latencies, 0.95), 1)
        if latencies
        else None,
        "admitted_turn_wall_max_s": round(max(r["wall_s"] for r in admitted), 2)
        if admitted
        else None,
    }


def main(argv: list[str] | None = None) -> int:
    from deployments import ray_cluster

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=40, help="simultaneous turns")
    parser.add_argument("--port", type=int, default=8011, help="HTTP port of the local app")
    args = parser.parse_args(argv)
    config = overload_config("overload", args.port, Path(tempfile.mkdtemp(prefix="overload-")))
    url = ray_cluster.start(config, num_cpus=4)
    try:
        httpx.post(f"{url}/v1/turn", json={"text": "warm up"}, timeout=120).raise_for_status()
        report = {
            "benchmark": "overload_admission",
            "machine": describe(),
            "cluster": f"fake backends, each stage 1 replica x {SLOTS} requests",
            **overload(url, args.turns),
        }
    finally:
        ray_cluster.stop()
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
