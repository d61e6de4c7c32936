"""Benchmark one conversational turn through the in-process pipeline; prints JSON.

Each turn starts from a question spoken by the TTS voice (so ASR is measured too) and ends
when the last frame of a reply of at most three sentences is rendered. Reported: median and
p95 per-stage latency, time-to-first-frame, total turn time, render fps, with the machine.

    python -m loadtests.bench_pipeline --turns 5 [--config deployments/configs/local.yaml]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from loadtests.machine import describe
from services.core.config import load_app_config
from services.core.types import ReplyChunk
from services.turn.pipeline import Pipeline, TurnResult

QUESTIONS = [
    "Hello! Can you tell me a little about yourself?",
    "What do you think makes a team work well together?",
    "How should I prepare for my first day at a new job?",
]

KEYS = [
    "asr_s",
    "llm_ttft_s",
    "llm_first_sentence_s",
    "time_to_first_audio_s",
    "time_to_first_frame_s",
    "total_s",
    "reply_audio_s",
    "llm_tokens_per_s",
    "tts_rtf",
    "asr_rtf",
    "render_fps",
    "rtf",
    "sentences",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def spoken_questions(tts) -> list:
    """`QUESTIONS` spoken by a TTS backend, as ASR input clips."""
    from services.core.types import AudioChunk

    clips = []
    for question in QUESTIONS:
        speech = tts.synthesize(question)
        clips.append(AudioChunk(speech.samples, speech.sample_rate))
    return clips


def run(pipeline: Pipeline, turns: int, warmup: int = 1) -> dict:
    load_s = pipeline.load()
    clips = spoken_questions(pipeline.tts)
    results: list[dict] = []
    for i in range(warmup + turns):
        result, sentences = None, 0
        for event in pipeline.run_turn(audio=clips[i % len(clips)]):
            if isinstance(event, TurnResult):
                result = event
            elif isinstance(event, ReplyChunk):
                sentences += 1
        if i >= warmup:
            results.append({**result.timings, "sentences": sentences})
    summary = {}
    for key in KEYS:
        values = [r[key] for r in results]
        summary[key] = {
            "p50": round(statistics.median(values), 4),
            "p95": round(percentile(values, 0.95), 4),
        }
    return {"load_s": {k: round(v, 3) for k, v in load_s.items()}, "turns": len(results),
            "stages": summary}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=5, help="measured turns (after 1 warm-up)")
    parser.add_argument("--config", help="app config YAML (default: built-in local backends)")
    args = parser.parse_args(argv)
    config = load_app_config(args.config)
    pipeline = Pipeline.from_config(config)
    started = time.time()
    report = {
        "benchmark": "pipeline_in_process",
        "machine": describe(),
        "backends": {s: config.stage(s).backend for s in ("asr", "llm", "tts", "render")},
        "render": config.stage("render").options.model_dump(mode="json"),
        "max_sentences": config.turn.max_sentences,
        **run(pipeline, args.turns),
        "wall_s": round(time.time() - started, 1),
    }
    pipeline.close()  # native sessions go before interpreter teardown (see services.commands.talk)
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
