"""What a finished turn leaves behind for `avatar talk`: the MP4 and the JSON summary.

Shared by the in-process path (`talk.py`) and the cluster client (`client.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.core.types import SpeechChunk, Transcript, VideoFrame
from services.turn.orchestrator import TurnResult


def stream_to_mp4(events, fps: float, out: Path | None) -> tuple[TurnResult, dict]:
    """Consume a turn's events, writing the MP4 as they come. Returns the result + details.

    The writer opens at the first frame (its size is the video's); speech that arrives before
    it is held until then.
    """
    from services.commands.mp4 import Mp4Writer

    writer, pending = None, []
    sentences: list[dict[str, Any]] = []
    result = None
    try:
        for event in events:
            if isinstance(event, SpeechChunk):
                sentences.append(
                    {"index": event.index, "text": event.text, "start_s": event.start_s,
                     "duration_s": event.duration_s, "phonemes": len(event.phonemes)}
                )  # fmt: skip
                if writer is None:
                    pending.append(event)
                else:
                    writer.add_speech(event)
            elif isinstance(event, VideoFrame) and out is not None:
                if writer is None:
                    writer = Mp4Writer(
                        out,
                        fps=fps,
                        width=event.width,
                        height=event.height,
                        sample_rate=pending[0].sample_rate,
                    )
                    for speech in pending:
                        writer.add_speech(speech)
                writer.add_frame(event)
            elif isinstance(event, TurnResult):
                result = event
    finally:
        if writer is not None:
            writer.close()
    if result is None:
        raise RuntimeError("the turn ended without a result")
    return result, {"sentences": sentences}


def summarize(result: TurnResult, extra: dict, out: Path | None) -> dict[str, Any]:
    transcript: Transcript = result.transcript
    summary: dict[str, Any] = {
        "transcript": transcript.text,
        "words": [
            {"word": w.word, "start_s": round(w.start_s, 3), "end_s": round(w.end_s, 3)}
            for w in transcript.words
        ],
        "reply": result.reply,
        "reply_audio_s": result.timings.get("reply_audio_s", 0.0),
        "timings": {k: round(v, 4) for k, v in result.timings.items()},
        "metadata": result.metadata,
        **extra,
    }
    if out is not None and out.exists():
        from services.commands.mp4 import probe

        summary["output"] = str(out)
        summary["media"] = probe(out)
    return summary
