"""In-process pipeline vs the Ray Serve cluster: same backends, same inputs, one run; prints JSON.

For each mode and concurrency (1 and 4 by default) it runs a fixed number of spoken turns and
reports time-to-first-frame p50/p95 (from request to the first frame received by the client)
and turns per minute, then the serving overhead ratio (Serve / in-process).

    python -m loadtests.bench_serving --turns 6 [--config deployments/configs/local.yaml]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import sys
import time
from pathlib import Path

from loadtests.bench_pipeline import percentile, spoken_questions
from loadtests.machine import describe
from services.core.audio import wav_bytes
from services.core.config import AppConfig, load_app_config
from services.core.types import VideoFrame
from services.turn.pipeline import Pipeline

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "deployments/configs/local.yaml"


def measure(turn_fn, clips, turns: int, concurrency: int) -> dict:
    """Run `turns` turns with `concurrency` workers; `turn_fn(clip)` returns its TTFF."""
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        ttffs = list(pool.map(turn_fn, [clips[i % len(clips)] for i in range(turns)]))
    wall = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "turns": turns,
        "ttff_p50_s": round(statistics.median(ttffs), 3),
        "ttff_p95_s": round(percentile(ttffs, 0.95), 3),
        "turns_per_min": round(60 * turns / wall, 2),
        "wall_s": round(wall, 1),
    }


def in_process(config: AppConfig, clips, turns: int, levels: list[int]) -> list[dict]:
    pipeline = Pipeline.from_config(config)
    pipeline.load()

    def turn(clip) -> float:
        start = time.perf_counter()
        ttff = None
        for event in pipeline.run_turn(audio=clip):
            if ttff is None and isinstance(event, VideoFrame):
                ttff = time.perf_counter() - start
        return ttff

    turn(clips[0])  # warm-up
    results = [measure(turn, clips, turns, c) for c in levels]
    pipeline.close()
    return results


def on_serve(config: AppConfig, clips, turns: int, levels: list[int]) -> list[dict]:
    from deployments import ray_cluster
    from services.commands.client import turn_events

    url = ray_cluster.start(config)
    payloads = {id(c): wav_bytes(c.samples, c.sample_rate) for c in clips}

    def turn(clip) -> float:
        start = time.perf_counter()
        ttff = None
        for event in turn_events(url, audio_bytes=payloads[id(clip)]):
            if ttff is None and isinstance(event, VideoFrame):
                ttff = time.perf_counter() - start
        return ttff

    try:
        turn(clips[0])  # warm-up
        return [measure(turn, clips, turns, c) for c in levels]
    finally:
        ray_cluster.stop()


def spoken(config: AppConfig):
    from services.core.registry import create_backend

    tts = create_backend("tts", config.stage("tts").backend, config.stage("tts").options)
    return spoken_questions(tts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="app config YAML")
    parser.add_argument("--turns", type=int, default=6, help="turns per concurrency level")
    parser.add_argument("--concurrency", default="1,4", help="comma-separated levels")
    args = parser.parse_args(argv)
    config = load_app_config(args.config)
    levels = [int(c) for c in args.concurrency.split(",")]
    clips = spoken(config)
    local_results = in_process(config, clips, args.turns, levels)
    serve_results = on_serve(config, clips, args.turns, levels)
    overhead = {
        f"c{a['concurrency']}": {
            "ttff_p50": round(b["ttff_p50_s"] / a["ttff_p50_s"], 3),
            "turns_per_min": round(b["turns_per_min"] / a["turns_per_min"], 3),
        }
        for a, b in zip(local_results, serve_results, strict=True)
    }
    report = {
        "benchmark": "serving_overhead",
        "machine": describe(),
        "config": str(args.config),
        "backends": {s: config.stage(s).backend for s in ("asr", "llm", "tts", "render")},
        "in_process": local_results,
        "serve": serve_results,
        "serve_over_in_process": overhead,
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
