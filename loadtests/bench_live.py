"""Live conversation benchmark: spoken questions streamed into the WebSocket in real time.

Three variants, back to back on the same clips and models, one JSON document on stdout:
- `inproc`: the router's `SocketSession` driven in this process (the local backends behind
  `LocalStages`, storage in a temporary SQLite file) over an in-memory WebSocket;
- `serve`: a local Ray Serve cluster of the same models, over a real WebSocket;
- `floor`: the sequential in-process floor of `shared/models.md`: ASR on the whole clip, the
  LLM paused at its first sentence, TTS of that sentence, its first frame; then the rest of the
  reply, one sentence at a time.
Live turns are measured from the moment the client sent the last voiced sample of the clip
(endpointing included); the floor from the end of the clip (an oracle end of speech). Each
variant's TTFF p50 is reported against the floor's. Progress goes to stderr.

    python -m loadtests.bench_live [--variants inproc,serve,floor] [--turns 7]
        [--barge-in-every 2] [--clips DIR] [--size 512] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.bench_pipeline import QUESTIONS
from loadtests.cluster import config_for_run
from loadtests.live_client import LiveClient, MemorySocket, WebSocketTransport, voiced_span
from loadtests.live_floor import run_floor, samples_of, summarise_floor
from loadtests.live_turns import Clip, analyse_turn, run_turns, spread, summarise, warm_up
from loadtests.machine import describe
from loadtests.paths import LOCAL_CONFIG
from services.core.audio import load_audio, pcm16, resample, write_wav
from services.core.config import AppConfig, parse_app_config, read_yaml

RATE = 16000
VARIANTS = ("inproc", "serve", "floor")


def progress(message: str) -> None:
    print(f"[bench_live {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def bench_config(path: Path, size: int, max_tokens: int) -> AppConfig:
    """The app config under test, like for like with the floor: greedy decoding, `max_tokens`,
    no history (every turn's prompt is the same as the floor's), frames of `size`², 25 fps."""
    data = read_yaml(path)
    data.setdefault("turn", {}).update(max_tokens=max_tokens, temperature=0.0, history_turns=0)
    render = data.setdefault("stages", {}).setdefault("render", {})
    render.setdefault("options", {}).update(width=size, height=size, fps=25)
    return parse_app_config(data, where=str(path))


# --- clips --------------------------------------------------------------------------------------


def to_clip(name: str, text: str | None, samples: np.ndarray, rate: int) -> Clip:
    x = resample(np.asarray(samples, dtype=np.float32), rate, RATE)
    first, last = voiced_span(x, RATE)
    return Clip(name, text, pcm16(x), RATE, first, last)


def synthesize_clips(config: AppConfig, folder: Path) -> list[Clip]:
    """The benchmark questions spoken by the configured TTS (Piper), saved as 16 kHz WAVs."""
    from services.core.registry import create_backend

    stage = config.stage("tts")
    tts = create_backend("tts", stage.backend, stage.options)
    tts.load()
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    try:
        for i, question in enumerate(QUESTIONS):
            speech = tts.synthesize(question)
            clip = to_clip(f"q{i}", question, speech.samples, speech.sample_rate)
            write_wav(folder / f"q{i}.wav", samples_of(clip), RATE)
            (folder / f"q{i}.txt").write_text(question + "\n")
            clips.append(clip)
    finally:
        tts.close()
    return clips


def load_clips(folder: Path) -> list[Clip]:
    """WAVs from a folder (any rate, mono); `name.txt` beside one holds its words."""
    paths = sorted(Path(folder).glob("*.wav"))
    if not paths:
        raise SystemExit(f"--clips: no *.wav in {folder}")
    clips = []
    for path in paths:
        audio = load_audio(path)
        words = path.with_suffix(".txt")
        text = words.read_text().strip() if words.exists() else None
        clips.append(to_clip(path.stem, text, audio.samples, audio.sample_rate))
    return clips


# --- live variants ------------------------------------------------------------------------------


async def live_session(connect, clips: list[Clip], args, label: str) -> list[dict[str, Any]]:
    """One session: a warm-up turn (cut after its first frame), then the measured turns."""
    client = LiveClient(await connect(), RATE, video=args.video)
    try:
        await client.open()
        progress(f"{label}: session open, warm-up turn")
        await warm_up(client, clips[0])
        spans = await run_turns(
            client,
            clips,
            args.turns,
            barge_in_every=args.barge_in_every,
            inject_after_s=args.inject_after,
            progress=lambda m: progress(f"{label}: {m}"),
        )
        await asyncio.sleep(1.0)  # media that leaks after the last `interrupted` counts too
        return [analyse_turn(client.log, span) for span in spans]
    finally:
        await client.close()


class InProcessServer:
    """The router's WebSocket handling without Ray: a `SocketSession` per connection, run in an
    event loop of its own thread (as a replica's is), over `LocalStages`."""

    def __init__(self, config: AppConfig, pipeline, folder: Path) -> None:
        from services.persona.personas import Personas
        from services.server.admission import Admission, capacity
        from services.server.conversation import Conversation
        from services.server.limits import KeyLimiter
        from services.storage.database import open_storage

        self.config = config
        self.storage = open_storage(config_for_run(config, folder).storage)
        self.conversation = Conversation(
            pipeline.stages,
            config.turn,
            self.storage.sessions,
            fps=config.stages.render.options.fps,
            max_sessions=config.limits.max_sessions,
            personas=Personas(config.personas, self.storage.transcripts),
            limiter=KeyLimiter(config.limits, self.storage.sessions),
            admission=Admission(capacity(config).turns),
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.lags: list[float] = []
        self.sessions = [asyncio.run_coroutine_threadsafe(self._watch_loop(), self.loop)]

    async def _watch_loop(self) -> None:
        """How late the server's event loop wakes up: work blocking it (JPEG encoding, VAD)
        delays every session's listening and sending alike."""
        while True:
            start = time.monotonic()
            await asyncio.sleep(0.01)
            self.lags.append(time.monotonic() - start - 0.01)

    def loop_lag(self) -> dict[str, Any]:
        return {**spread(self.lags), "max": round(max(self.lags), 4) if self.lags else None}

    async def connect(self):
        sock = MemorySocket(server_loop=self.loop, client_loop=asyncio.get_running_loop())
        self.sessions.append(asyncio.run_coroutine_threadsafe(self._serve(sock), self.loop))
        return sock.client

    async def _serve(self, sock: MemorySocket) -> None:
        from services.server.socket_session import SocketSession

        limit = self.config.limits.max_audio_bytes
        await SocketSession(self.conversation, limit, sock, live=self.config.live).run()

    def close(self) -> None:
        watcher, *sessions = self.sessions
        watcher.cancel()
        for running in sessions:  # a session ends once its client is gone: let it finish
            with contextlib.suppress(Exception):
                running.result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.storage.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(config: AppConfig, folder: Path) -> str:
    """Ray and the app, started before this process loads any model: Ray forks helpers, and a
    fork of a process full of model threads (onnxruntime, llama.cpp) can deadlock."""
    from deployments import ray_cluster

    progress("serve: starting Ray and the app (a minute or two)")
    url = ray_cluster.start(config_for_run(config, folder, free_port()))
    progress(f"serve: running at {url}")
    return url


def run_serve(url: str, clips: list[Clip], args) -> list[dict[str, Any]]:
    ws = url.replace("http://", "ws://", 1) + "/v1/session"
    return asyncio.run(live_session(lambda: WebSocketTransport.connect(ws), clips, args, "serve"))


# --- the run ------------------------------------------------------------------------------------


def run(
    args, clips: list[Clip], config: AppConfig, folder: Path, serve_url: str | None
) -> dict[str, dict[str, Any]]:
    """Each variant's summary and turns: Serve (already started; its replicas load their own
    models), then the in-process ones (one set of models)."""
    variants = [v for v in VARIANTS if v in args.variants]
    results: dict[str, dict[str, Any]] = {}
    if serve_url is not None:
        from deployments import ray_cluster

        records = run_serve(serve_url, clips, args)
        results["serve"] = {"summary": summarise(records), "turns": records}
        ray_cluster.stop()  # idle replicas would still take CPU from the in-process runs
    if {"inproc", "floor"} & set(variants):
        from services.turn.pipeline import Pipeline

        progress("loading the local models")
        pipeline = Pipeline.from_config(config)
        pipeline.load()
        try:
            if "inproc" in variants:
                server = InProcessServer(config, pipeline, folder)
                try:
                    records = asyncio.run(live_session(server.connect, clips, args, "inproc"))
                finally:
                    server.close()
                summary = {**summarise(records), "server_loop_lag_s": server.loop_lag()}
                results["inproc"] = {"summary": summary, "turns": records}
            if "floor" in variants:
                records = run_floor(pipeline, clips, args.turns)
                results["floor"] = {"summary": summarise_floor(records), "turns": records}
        finally:
            pipeline.close()
    return results


def over_floor(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    floor = results.get("floor", {}).get("summary")
    if not floor:
        return {}
    out = {}
    for name, result in results.items():
        if name == "floor":
            continue
        ratios = {}
        for key in ("ttff_s", "ttfa_s"):
            mine, base = result["summary"][key]["p50"], floor[key]["p50"]
            ratios[f"{key[:-2]}_p50"] = round(mine / base, 3) if mine and base else None
        out[name] = ratios
    return out


# The targets on this 2-core CPU (TTFF on Ray Serve; the others per live variant).
# Barge-in stop is as the issue defines it: injected speech -> the last media message sent
# (`barge_in.last_media_s`); `barge_in.stop_s` (-> the `interrupted` event) is reported too.
TARGETS = {"ttff_s": ("p50", 1.1), "barge_in_stop_s": ("p95", 0.25), "server_rtf": ("p50", 0.6),
           "video_mbit_per_s": ("p50", 1.5)}  # fmt: skip


def against_targets(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for name, result in results.items():
        if name == "floor":
            continue
        s = result["summary"]
        got = {
            "ttff_s": s["ttff_s"]["p50"],
            "barge_in_stop_s": s["barge_in"]["last_media_s"]["p95"],
            "server_rtf": s["server_rtf"]["p50"],
            "video_mbit_per_s": s["video_mbit_per_s_p50"],
        }
        out[name] = {k: {"target": f"{q} <= {limit}", "got": got[k],
                         "met": None if got[k] is None else got[k] <= limit}
                     for k, (q, limit) in TARGETS.items()}  # fmt: skip
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of "
                   + ", ".join(VARIANTS))  # fmt: skip
    p.add_argument("--turns", type=int, default=7, help="measured turns per variant")
    p.add_argument(
        "--barge-in-every",
        type=int,
        default=2,
        help="interrupt every K-th turn with the next question (0 = never)",
    )
    p.add_argument(
        "--inject-after",
        type=float,
        default=1.0,
        help="seconds after the first frame the barge-in speech starts",
    )
    p.add_argument("--clips", type=Path, help="folder of question WAVs (+ .txt); default: "
                   "the benchmark questions spoken by Piper")  # fmt: skip
    p.add_argument("--size", type=int, default=512, help="frame width and height")
    p.add_argument("--video", choices=("jpeg", "h264"), default="jpeg",
                   help="frames as JPEG or as one H.264 stream per sentence")  # fmt: skip
    p.add_argument("--max-tokens", type=int, default=60, help="LLM token cap per reply")
    p.add_argument("--config", type=Path, default=LOCAL_CONFIG, help="app config YAML")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown or not args.variants:
        p.error(f"--variants: choose from {', '.join(VARIANTS)} (got {sorted(unknown)})")
    if args.turns < 1:
        p.error("--turns must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    started, load_before = time.time(), os.getloadavg()
    config = bench_config(args.config, args.size, args.max_tokens)
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        folder = Path(tmp)
        from deployments import ray_cluster

        serve_url = start_serve(config, folder) if "serve" in args.variants else None
        try:
            if args.clips:
                clips = load_clips(args.clips)
            else:
                progress("synthesising the questions with Piper")
                clips = synthesize_clips(config, folder / "clips")
            results = run(args, clips, config, folder, serve_url)
        finally:
            if serve_url is not None:
                ray_cluster.stop()
    render = config.stage("render").options
    report = {
        "benchmark": "live",
        "command": shlex.join([sys.executable, "-m", "loadtests.bench_live", *argv]),
        "machine": {**describe(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "config": {
            "backends": {s: config.stage(s).backend for s in ("asr", "llm", "tts", "render")},
            "turn": config.turn.model_dump(
                include={
                    "max_tokens",
                    "max_sentences",
                    "temperature",
                    "first_clause_chars",
                    "history_turns",
                }
            ),
            "render": {
                "size": [render.width, render.height],
                "fps": render.fps,
                "antialias": getattr(render, "antialias", None),
                "video": args.video,
            },
            "live": config.live.model_dump(),
        },  # fmt: skip
        "clips": [
            {
                "name": c.name,
                "text": c.text,
                "duration_s": round(c.duration_s, 3),
                "voiced_end_s": round(c.voiced_end_s, 3),
            }
            for c in clips
        ],  # fmt: skip
        "variants": results,
        "over_floor": over_floor(results),
        "targets": against_targets(results),
        "wall_s": round(time.time() - started, 1),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
