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
import asyncio
import json
import statistics
import sys
import tempfile
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


async def one_turn(client: httpx.AsyncClient, url: str) -> dict:
    """One text turn: its HTTP status, when the status came, and how the stream ended."""
    sent = time.perf_counter()
    async with client.stream("POST", f"{url}/v1/turn", json={"text": "Hello"}) as response:
        status_s = time.perf_counter() - sent
        lines = [line async for line in response.aiter_lines() if line.strip()]
    last = json.loads(lines[-1]) if lines else {}
    return {
        "status": response.status_code,
        "status_s": status_s,
        "retry_after": response.headers.get("retry-after"),
        "final": last.get("type") if response.status_code == 200 else None,
        "final_status": last.get("status"),
        "wall_s": time.perf_counter() - sent,
    }


async def fire(url: str, turns: int) -> list[dict]:
    """`turns` turns at once from one client over connections opened beforehand, as a browser
    or a load balancer keeps them: the latency measured is the server's, not the client's
    (a thread and a new connection per request added ~0.4 s at 40 on 2 cores)."""
    limits = httpx.Limits(max_connections=turns, max_keepalive_connections=turns)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await asyncio.gather(*(client.get(f"{url}/healthz") for _ in range(turns)))
        return await asyncio.gather(*(one_turn(client, url) for _ in range(turns)))


def overload(url: str, turns: int) -> dict:
    """Fire `turns` turns at once at `url`; the figures of the run (see the module docstring)."""
    results = asyncio.run(fire(url, turns))
    admitted = [r for r in results if r["status"] == 200]
    rejected = [r for r in results if r["status"] == 503]
    latencies = sorted(r["status_s"] for r in rejected)
    return {
        "turns": turns,
        "client": "one asyncio httpx client, connections opened before the burst",
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
    parser.add_argument("--repeat", type=int, default=1, help="bursts, one after another")
    args = parser.parse_args(argv)
    config = overload_config("overload", args.port, Path(tempfile.mkdtemp(prefix="overload-")))
    url = ray_cluster.start(config, num_cpus=4)
    try:
        httpx.post(f"{url}/v1/turn", json={"text": "warm up"}, timeout=120).raise_for_status()
        bursts = [overload(url, args.turns) for _ in range(args.repeat)]
        report = {
            "benchmark": "overload_admission",
            "command": " ".join(["python -m loadtests.bench_overload", *(argv or sys.argv[1:])]),
            "machine": describe(),
            "cluster": f"fake backends, each stage 1 replica x {SLOTS} requests",
            **bursts[-1],
            "bursts": bursts,
        }
    finally:
        ray_cluster.stop()
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
