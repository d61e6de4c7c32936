"""The JSON message protocol between the router and clients (HTTP NDJSON and WebSocket).

Server -> client events, one JSON object each, in order of availability:
  {"type": "session", "session_id", "persona_id"}              (WebSocket start / HTTP first)
  {"type": "transcript", "text", "words": [{word, start_s, end_s}]}
  {"type": "plan", "kind", "sources": [{id, source, title, text, score}, ...]}
                                                               (persona turns: the citations)
  {"type": "reply", "index", "text"}                           (one per sentence)
  {"type": "audio", "index", "start_s", "duration_s", "sample_rate",
   "pcm16_b64", "phonemes": [[phoneme, start_s, end_s], ...]}  (mono 16-bit PCM)
  {"type": "frame", "index", "pts_s", "width", "height", "jpeg_b64"}
  {"type": "done", "reply", "timings", "metadata"}
  {"type": "error", "status", "reason"}                        (then the stream ends)
`index`/`pts_s`/`start_s` place everything on the turn timeline, so a client plays audio
from `start_s` and shows frame n at `pts_s`.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from services.core.audio import pcm16
from services.core.types import ReplyChunk, SpeechChunk, Transcript, VideoFrame
from services.stages.render.jpeg import to_jpeg
from services.turn.orchestrator import TurnPlanned, TurnResult


def event_json(event: Any) -> dict[str, Any]:
    """Serialise one pipeline event."""
    if isinstance(event, Transcript):
        return {
            "type": "transcript",
            "text": event.text,
            "words": [
                {"word": w.word, "start_s": round(w.start_s, 3), "end_s": round(w.end_s, 3)}
                for w in event.words
            ],
        }
    if isinstance(event, ReplyChunk):
        return {"type": "reply", "index": event.index, "text": event.text}
    if isinstance(event, SpeechChunk):
        return {
            "type": "audio",
            "index": event.index,
            "start_s": round(event.start_s, 4),
            "duration_s": round(event.duration_s, 4),
            "sample_rate": event.sample_rate,
            "pcm16_b64": base64.b64encode(pcm16(event.samples)).decode(),
            "phonemes": [[p.phoneme, round(p.start_s, 4), round(p.end_s, 4)]
                         for p in event.phonemes],
        }  # fmt: skip
    if isinstance(event, VideoFrame):
        frame = to_jpeg(event)
        return {
            "type": "frame",
            "index": frame.index,
            "pts_s": round(frame.pts_s, 4),
            "width": frame.width,
            "height": frame.height,
            "jpeg_b64": base64.b64encode(frame.jpeg).decode(),
        }
    if isinstance(event, TurnPlanned):
        return {"type": "plan", "kind": event.kind, "sources": list(event.sources)}
    if isinstance(event, TurnResult):
        return {
            "type": "done",
            "reply": event.reply,
            "timings": {k: round(v, 4) for k, v in event.timings.items()},
            "metadata": event.metadata,
        }
    raise TypeError(f"not a pipeline event: {type(event).__name__}")


def error_json(status: int, reason: str) -> dict[str, Any]:
    return {"type": "error", "status": status, "reason": reason}


def speech_from_json(message: dict[str, Any]) -> SpeechChunk:
    """Rebuild a speech chunk from an `audio` event (used by clients, e.g. `avatar talk`)."""
    from services.core.types import PhonemeTiming

    pcm = np.frombuffer(base64.b64decode(message["pcm16_b64"]), dtype="<i2")
    return SpeechChunk(
        samples=pcm.astype(np.float32) / 32768.0,
        sample_rate=int(message["sample_rate"]),
        text="",
        index=int(message["index"]),
        phonemes=tuple(PhonemeTiming(p, s, e) for p, s, e in message.get("phonemes", [])),
        start_s=float(message["start_s"]),
    )


def frame_from_json(message: dict[str, Any]) -> VideoFrame:
    return VideoFrame(
        index=int(message["index"]),
        pts_s=float(message["pts_s"]),
        jpeg=base64.b64decode(message["jpeg_b64"]),
        size=(int(message["width"]), int(message["height"])),
    )
