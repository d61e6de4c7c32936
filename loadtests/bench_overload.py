"""Overload at admission: N simultaneous turns at a cluster sized for 4; prints JSON.

Fake backends (seconds-long turns, no models) on a local Ray Serve app whose stages each take
4 requests at once, so the router admits 4 turns and must refuse the rest at the start (HTTP
503 + Retry-After) instead of queueing them or failing them mid-stream. Reports admitted and
rejected turns, the rejections' latency (request sent -> status received) p50/p95, turns that
failed mid-stream (an `error` event after a 200: must be 0) and the machine.

    python -m loadtests.bench_overload [--turns 40] [--repeat 3] [--ingress haproxy proxy]

Each `--ingress` variant (`http.ingress`: HAProxy + Serve's direct ingress, or Ray's Python
proxy) runs in its own process and Ray instance, since Serve reads that choice when Ray starts;
with `--rounds 2` the variants alternate A B A B, so drift hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from loadtests.bench_pipeline import percentile
from loadtests.machine import describe
from services.core.config import AppConfig

SLOTS = 4  # requests each stage takes at once: the cluster is sized for 4 concurrent turns


def overload_config(
    name: str, port: int, state_dir: Path, small_cpu: float = 0.05, ingress: str = "haproxy"
) -> AppConfig:
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
        http={"host": "127.0.0.1", "port": port, "ingress": ingress},
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


def run_variant(ingress: str, turns: int, port: int, repeat: int) -> dict:
    """`repeat` bursts at a fresh local cluster whose `http.ingress` is `ingress`."""
    from deployments import ray_cluster

    state_dir = Path(tempfile.mkdtemp(prefix="overload-"))
    config = overload_config("overload", port, state_dir, ingress=ingress)
    url = ray_cluster.start(config, num_cpus=4)
    try:
        httpx.post(f"{url}/v1/turn", json={"text": "warm up"}, timeout=120).raise_for_status()
        return {"ingress": ingress, "bursts": [overload(url, turns) for _ in range(repeat)]}
    finally:
        ray_cluster.stop()


def _in_subprocess(ingress: str, args: argparse.Namespace) -> dict:
    print(f"[bench_overload] {ingress}: {args.repeat} burst(s) of {args.turns} turns ...",
          file=sys.stderr, flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "result.json"  # not stdout: Ray's own logs land there too
        command = [sys.executable, "-m", "loadtests.bench_overload", "--variant", ingress]
        command += ["--turns", str(args.turns), "--port", str(args.port)]
        command += ["--repeat", str(args.repeat), "--result", str(result)]
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, timeout=900)  # fmt: skip
        if done.returncode != 0 or not result.exists():
            raise RuntimeError(f"the {ingress} variant failed:\n{done.stderr[-3000:]}")
        return json.loads(result.read_text())


def _summary(runs: list[dict]) -> dict:
    """Per ingress: every burst's rejection p50 and p95, and the counts summed over them."""
    out = {}
    for ingress in dict.fromkeys(r["ingress"] for r in runs):
        bursts = [b for r in runs if r["ingress"] == ingress for b in r["bursts"]]
        out[ingress] = {
            "bursts": len(bursts),
            "rejection_latency_p95_ms": [b["rejection_latency_p95_ms"] for b in bursts],
            "rejection_latency_p50_ms": [b["rejection_latency_p50_ms"] for b in bursts],
            "rejected": sum(b["rejected"] for b in bursts),
            "rejected_with_retry_after": sum(b["rejected_with_retry_after"] for b in bursts),
            "admitted": sum(b["admitted"] for b in bursts),
            "mid_stream_failures": sum(b["mid_stream_failures"] for b in bursts),
            "other_statuses": sorted({s for b in bursts for s in b["other_statuses"]}),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=40, help="simultaneous turns")
    parser.add_argument("--port", type=int, default=8011, help="HTTP port of the local app")
    parser.add_argument("--repeat", type=int, default=1, help="bursts per cluster start")
    parser.add_argument("--ingress", nargs="+", default=["haproxy", "proxy"],
                        choices=["haproxy", "proxy"], help="http.ingress variants")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=1, help="A B rounds of the variants")
    parser.add_argument("--variant", choices=["haproxy", "proxy"], help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:  # the child process of one variant: its raw figures into --result
        run = run_variant(args.variant, args.turns, args.port, args.repeat)
        args.result.write_text(json.dumps(run))
        return 0
    runs = [_in_subprocess(ingress, args) for _ in range(args.rounds) for ingress in args.ingress]
    report = {
        "benchmark": "overload_admission",
        "command": " ".join(["python -m loadtests.bench_overload", *(argv or sys.argv[1:])]),
        "machine": describe(),
        "cluster": f"fake backends, each stage 1 replica x {SLOTS} requests",
        "turns": args.turns,
        "client": "one asyncio httpx client, connections opened before the burst",
        "target": "every excess turn 503 at admission, p95 < 200 ms, none mid-stream",
        "summary": _summary(runs),
        "runs": runs,
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
