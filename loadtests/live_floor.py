"""The sequential floor of `shared/models.md`: what one turn costs with these models when
nothing overlaps and nothing competes, in one process.

ASR on the whole clip, then the LLM until its first sentence is complete (the generator is not
advanced further, so decoding pauses), TTS of that sentence, its first frame; then the rest of
the reply one sentence at a time, every frame rendered and JPEG-encoded as the live variants'
are. Timed from the end of the clip: an oracle end of speech, no endpointing.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

import numpy as np

from loadtests.live_turns import Clip, spread, wer

RATE = 16000


def progress(message: str) -> None:
    print(f"[bench_live {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def samples_of(clip: Clip) -> np.ndarray:
    return np.frombuffer(clip.pcm, dtype="<i2").astype(np.float32) / 32768.0


def floor_turn(pipeline, clip: Clip) -> dict[str, Any]:
    """One turn, strictly sequential, timed from the end of the clip."""
    from services.core.types import AudioChunk
    from services.stages.llm.sentences import sentences
    from services.stages.render.jpeg import to_jpeg
    from services.turn.orchestrator import default_plan

    turn = pipeline.turn
    audio = AudioChunk(samples_of(clip), RATE)
    t0 = time.perf_counter()
    transcript = pipeline.asr.transcribe(audio)
    asr_s = time.perf_counter() - t0
    messages = default_plan(turn, transcript.text, ()).messages
    pieces = pipeline.llm.stream(messages, max_tokens=turn.max_tokens, temperature=turn.temperature)
    chunks = sentences(pieces, max_sentences=turn.max_sentences)
    marks: dict[str, float] = {}
    cursor, frames, render_s = 0.0, 0, 0.0
    try:
        # The generator is only advanced after a sentence is spoken and rendered: the LLM is
        # paused while the first sentence's speech and frames are made.
        chunk = next(chunks, None)
        marks["llm_first_sentence_s"] = time.perf_counter() - t0
        while chunk is not None:
            speech = pipeline.tts.synthesize(chunk.text)
            speech = dataclasses.replace(speech, index=chunk.index, start_s=cursor)
            cursor = speech.end_s
            marks.setdefault("ttfa_s", time.perf_counter() - t0)
            start = time.perf_counter()
            for frame in pipeline.render.render(speech):
                to_jpeg(frame)  # the live variants send JPEGs: the same work
                frames += 1
                marks.setdefault("ttff_s", time.perf_counter() - t0)
            render_s += time.perf_counter() - start
            chunk = next(chunks, None)
    finally:
        chunks.close()
    total = time.perf_counter() - t0
    return {
        "clip": clip.name,
        "error": None if frames else "no reply",
        "asr_s": round(asr_s, 4),
        **{k: round(v, 4) for k, v in marks.items()},
        "total_s": round(total, 3),
        "reply_audio_s": round(cursor, 3),
        "rtf": round(total / cursor, 3) if cursor else None,
        "render_fps": round(frames / render_s, 1) if render_s else None,
        "transcript": transcript.text,
        "wer": None if clip.text is None else round(wer(clip.text, transcript.text), 4),
    }


def run_floor(pipeline, clips: list[Clip], turns: int) -> list[dict[str, Any]]:
    floor_turn(pipeline, clips[0])  # warm-up
    records = []
    for i in range(turns):
        records.append(floor_turn(pipeline, clips[i % len(clips)]))
        progress(f"floor: turn {i + 1}/{turns} ttff {records[-1].get('ttff_s')} s")
    return records


def summarise_floor(records: list[dict[str, Any]]) -> dict[str, Any]:
    wers = [r["wer"] for r in records if r.get("wer") is not None]
    return {
        "turns": len(records),
        "errored": sum(r["error"] is not None for r in records),
        **{k: spread([r.get(k) for r in records])
           for k in ("asr_s", "llm_first_sentence_s", "ttfa_s", "ttff_s", "rtf", "render_fps")},
        "transcript": {"n": len(wers), "exact": sum(w == 0 for w in wers),
                       "wer_mean": round(sum(wers) / len(wers), 4) if wers else None},
    }  # fmt: skip
