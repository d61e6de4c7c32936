"""Benchmark the `head3d` renderer's anti-aliasing variants, batching and frame encodings.

Every variant renders the same speech input (a fixed phoneme timeline: the test sentence at
a speaking rate, with pauses) through the public `render()` API, back to back and interleaved
over `--reps` rounds, so drift on a shared machine hits all variants alike. Reported, as JSON:
- `speed`: per size and antialias mode, wall fps and CPU ms per frame (all of the process's
  threads, the GL rasteriser's included: what the frame costs the machine's cores);
- `quality`: mean absolute difference (0-255) against a reference of the same frame rendered
  at 4-8x the size with 4x MSAA (>= 64 samples per pixel) and box-filtered down, over all and edge
  pixels (where the reference's 3x3 luma range exceeds 16), and the 99.9th percentile of the
  per-pixel error (the staircase on silhouettes);
- `batching`: concurrent streams through one renderer, max_batch 1 vs 8 (on a CPU rasteriser
  batching saves nothing; it is for GPUs, where a batch shares one sync and readback);
- `encoding`: bytes/s per session at 25 fps and ms per frame, per-frame JPEG (`jpeg.py`'s
  quality) vs H.264 (`h264.py` defaults) on the same frames, with PSNR of each.

    python -m loadtests.bench_render [--frames 50] [--reps 3] [--sizes 256 384 512]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time

import numpy as np

from loadtests.machine import describe
from services.core.types import PhonemeTiming, SpeechChunk
from services.stages.render.head3d import HeadRenderer, HeadRendererOptions

MODES = ("none", "fxaa", "msaa2", "msaa4")
# "Hello, my name is Ada. I can help you find the nearest train station today." in rough IPA.
WORDS = "həloʊ _ maɪ neɪm ɪz eɪdə _ aɪ kæn hɛlp ju faɪnd ðə nɪɹəst tɹeɪn steɪʃən tədeɪ _"
FPS = 25.0


def speech(duration_s: float, start_s: float = 0.0) -> SpeechChunk:
    """A chunk of `duration_s` whose phonemes cycle through the sentence, 85 ms each."""
    phonemes, t = [], 0.0
    symbols = [c for c in WORDS if c != " "]
    while t < duration_s:
        symbol = symbols[len(phonemes) % len(symbols)]
        span = 0.25 if symbol == "_" else 0.085
        phonemes.append(PhonemeTiming(symbol, t, min(t + span, duration_s)))
        t += span
    rate = 16000
    return SpeechChunk(
        samples=np.zeros(round(duration_s * rate), dtype=np.float32),
        sample_rate=rate,
        text="bench",
        index=0,
        phonemes=tuple(phonemes),
        start_s=start_s,
    )


def renderer(size: int, **options) -> HeadRenderer:
    backend = HeadRenderer(HeadRendererOptions(width=size, height=size, **options))
    backend.load()
    return backend


def timed_render(backend: HeadRenderer, chunk: SpeechChunk) -> tuple[list, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    frames = list(backend.render(chunk))
    return frames, time.perf_counter() - wall, time.process_time() - cpu


def bench_speed(sizes: list[int], frames: int, reps: int) -> list[dict]:
    chunk = speech(frames / FPS)
    backends = {(s, m): renderer(s, antialias=m) for s in sizes for m in MODES}
    samples: dict = {key: [] for key in backends}
    for backend in backends.values():
        list(backend.render(speech(0.2)))  # warm up: shader compile, first upload
    for _ in range(reps):
        for key, backend in backends.items():
            got, wall, cpu = timed_render(backend, chunk)
            samples[key].append((len(got) / wall, cpu / len(got) * 1000))
    out = []
    for (size, mode), runs in samples.items():
        out.append(
            {
                "size": size,
                "antialias": mode,
                "fps": round(statistics.median(r[0] for r in runs), 1),
                "cpu_ms_per_frame": round(statistics.median(r[1] for r in runs), 2),
            }
        )
        backends[(size, mode)].close()
    return out


def bench_quality(sizes: list[int]) -> list[dict]:
    chunk = speech(1.0)
    pick = [6, 14, 22]  # frames with the mouth at different openings
    out = []
    for size in sizes:
        # As large as the renderer allows (2048), with 4x MSAA: >= 64 samples per pixel.
        scale = 2048 // size
        ref_backend = renderer(size * scale, antialias="msaa4", max_batch=1)
        refs = []
        for i, frame in enumerate(ref_backend.render(chunk)):
            if i in pick:
                big = frame.rgb.astype(np.float32).reshape(size, scale, size, scale, 3)
                refs.append(big.mean(axis=(1, 3)))
        ref_backend.close()
        luma = [r @ np.array([0.299, 0.587, 0.114]) for r in refs]
        edges = [_local_range(lum) > 16 for lum in luma]
        for mode in MODES:
            backend = renderer(size, antialias=mode)
            got = [f.rgb for i, f in enumerate(backend.render(chunk)) if i in pick]
            backend.close()
            diffs = [np.abs(g.astype(np.float32) - r) for g, r in zip(got, refs, strict=True)]
            out.append(
                {
                    "size": size,
                    "antialias": mode,
                    "reference_samples_per_pixel": scale * scale * 4,
                    "mad": round(float(np.mean([d.mean() for d in diffs])), 3),
                    "edge_mad": round(
                        float(np.mean([d[e].mean() for d, e in zip(diffs, edges, strict=True)])),
                        2,
                    ),
                    # Jaggies: the worst 0.1% of pixels (largest channel error).
                    "p99_9": round(
                        float(np.mean([np.percentile(d.max(axis=2), 99.9) for d in diffs])), 1
                    ),
                }
            )
    return out


def _local_range(lum: np.ndarray) -> np.ndarray:
    padded = np.pad(lum, 1, mode="edge")
    h, w = lum.shape
    stack = [padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]
    return np.max(stack, axis=0) - np.min(stack, axis=0)


def bench_batching(size: int, sessions: int, frames: int) -> list[dict]:
    out = []
    for max_batch in (1, 8):
        backend = renderer(size, max_batch=max_batch)
        list(backend.render(speech(0.2)))
        chunks = [speech(frames / FPS, start_s=i * 0.37) for i in range(sessions)]
        done = [0] * sessions

        def run(slot: int, backend=backend, chunks=chunks, done=done) -> None:
            done[slot] = sum(1 for _ in backend.render(chunks[slot]))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(sessions)]
        wall, cpu = time.perf_counter(), time.process_time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stats = backend.batch_stats()
        backend.close()
        out.append(
            {
                "size": size,
                "sessions": sessions,
                "max_batch": max_batch,
                "total_fps": round(sum(done) / wall, 1),
                "cpu_ms_per_frame": round(cpu / sum(done) * 1000, 2),
                "largest_batch": stats["largest_batch"],
                "mean_batch": round(stats["batched_frames"] / max(stats["batches"], 1), 2),
            }
        )
    return out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return round(10 * np.log10(255.0**2 / max(mse, 1e-12)), 2)


def bench_encoding(size: int, seconds: float) -> dict:
    # PyAV only here: `--skip-encoding` runs the rest where it is not installed (a GPU node).
    import av

    from services.stages.render.h264 import H264Encoder
    from services.stages.render.jpeg import decode_jpeg, encode_jpeg

    backend = renderer(size)
    frames = [f.rgb for f in backend.render(speech(seconds))]
    backend.close()
    start = time.perf_counter()
    jpegs = [encode_jpeg(rgb) for rgb in frames]
    jpeg_ms = (time.perf_counter() - start) / len(frames) * 1000
    encoder = H264Encoder(size, size, FPS)
    start = time.perf_counter()
    packets = [p for rgb in frames for p in encoder.encode(rgb)] + encoder.flush()
    h264_ms = (time.perf_counter() - start) / len(frames) * 1000
    decoder = av.CodecContext.create("h264", "r")
    decoded = [f for p in packets for f in decoder.decode(av.Packet(p.data))]
    decoded += decoder.decode(None)
    jpeg_bytes = sum(map(len, jpegs))
    h264_bytes = sum(len(p.data) for p in packets)
    return {
        "size": size,
        "fps": FPS,
        "frames": len(frames),
        "jpeg": {
            "bytes_per_s": round(jpeg_bytes / len(frames) * FPS),
            "mbit_per_s": round(jpeg_bytes * 8 / len(frames) * FPS / 1e6, 3),
            "encode_ms_per_frame": round(jpeg_ms, 2),
            "psnr_db": round(
                statistics.mean(
                    _psnr(decode_jpeg(j), f) for j, f in zip(jpegs, frames, strict=True)
                ),
                2,
            ),
        },
        "h264": {
            "encoder": encoder.codec_name,
            "codec_string": encoder.codec_string,
            "bytes_per_s": round(h264_bytes / len(frames) * FPS),
            "mbit_per_s": round(h264_bytes * 8 / len(frames) * FPS / 1e6, 3),
            "encode_ms_per_frame": round(h264_ms, 2),
            "keyframes": sum(p.keyframe for p in packets),
            "decoded_frames": len(decoded),
            "psnr_db": round(
                statistics.mean(
                    _psnr(d.to_ndarray(format="rgb24"), f)
                    for d, f in zip(decoded, frames, strict=True)
                ),
                2,
            ),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50, help="frames per timed run")
    parser.add_argument("--reps", type=int, default=3, help="interleaved rounds per variant")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 384, 512])
    parser.add_argument("--sessions", type=int, default=4, help="concurrent streams (batching)")
    parser.add_argument("--encode-seconds", type=float, default=10.0)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-encoding", action="store_true", help="no JPEG/H.264 (no PyAV)")
    args = parser.parse_args(argv)
    result = {
        "machine": describe(),
        "note": "shared, loaded machine: compare variants within this run, not across runs",
        "speed": bench_speed(args.sizes, args.frames, args.reps),
        "quality": [] if args.skip_quality else bench_quality(args.sizes),
        "batching": bench_batching(max(args.sizes), args.sessions, args.frames),
        "encoding": None
        if args.skip_encoding
        else bench_encoding(max(args.sizes), args.encode_seconds),
    }
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
