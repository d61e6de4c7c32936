"""A client of the cluster's HTTP API: one turn over `POST /v1/turn`, events back as objects.

Used by `avatar talk --server URL`, the serving benchmark and the tests. It turns the NDJSON
event stream back into the pipeline's own types, so the MP4 is written by the same code as in
process.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from services.core.types import ReplyChunk, SpeechChunk, Transcript, WordTiming
from services.server.events import frame_from_json, speech_from_json
from services.turn.orchestrator import TurnResult


class ServerError(RuntimeError):
    """The server answered with an error (HTTP 4xx/5xx or an `error` event)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"server error {status}: {reason}")
        self.status, self.reason = status, reason


def event_from_json(message: dict[str, Any], transcript: Transcript | None):
    kind = message.get("type")
    if kind == "transcript":
        words = tuple(WordTiming(w["word"], w["start_s"], w["end_s"]) for w in message["words"])
        return Transcript(text=message["text"], words=words)
    if kind == "reply":
        return ReplyChunk(text=message["text"], index=message["index"])
    if kind == "audio":
        return speech_from_json(message)
    if kind == "frame":
        return frame_from_json(message)
    if kind == "done":
        return TurnResult(
            transcript=transcript or Transcript(text=""),
            reply=message["reply"],
            timings=message["timings"],
            metadata=message.get("metadata", {}),
        )
    if kind == "error":
        raise ServerError(message.get("status", 500), message.get("reason", "unknown error"))
    return None  # "session" and future event types


def turn_events(
    server: str,
    *,
    text: str | None = None,
    audio_bytes: bytes | None = None,
    session_id: str | None = None,
    persona_id: str | None = None,
    timeout_s: float = 300,
    api_key: str | None = None,
) -> Iterator[Any]:
    """Stream one turn's events as pipeline objects (raw `session` events are dicts).

    `api_key` is sent as `Authorization: Bearer` (needed unless the cluster runs open)."""
    import httpx

    body: dict[str, Any] = {"text": text} if text is not None else {
        "audio_b64": base64.b64encode(audio_bytes or b"").decode()
    }  # fmt: skip
    if session_id:
        body["session_id"] = session_id
    if persona_id:
        body["persona_id"] = persona_id
    url = server.rstrip("/") + "/v1/turn"
    transcript = None
    replies: dict[int, str] = {}  # sentence index -> text: `audio` events do not repeat it
    headers = auth_headers(api_key)
    with httpx.stream("POST", url, json=body, headers=headers, timeout=timeout_s) as response:
        if response.status_code >= 400:
            response.read()
            try:
                reason = response.json().get("error", response.text)
            except ValueError:
                reason = response.text
            raise ServerError(response.status_code, reason)
        for line in response.iter_lines():
            if not line.strip():
                continue
            message = json.loads(line)
            if message.get("type") == "session":
                yield message
                continue
            event = event_from_json(message, transcript)
            if isinstance(event, Transcript):
                transcript = event
            elif isinstance(event, ReplyChunk):
                replies[event.index] = event.text
            elif isinstance(event, SpeechChunk):
                event = dataclasses.replace(event, text=replies.get(event.index, ""))
            if event is not None:
                yield event


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def talk_over_http(server: str, request) -> dict[str, Any]:
    """`avatar talk --server`: one turn against a running cluster, same output as in process."""
    from services.commands.turn_output import stream_to_mp4, summarize

    audio_bytes = None
    if request.audio_path is not None:
        from services.core.audio import load_audio

        load_audio(request.audio_path)  # fail here, with the file's name, on a bad file
        audio_bytes = request.audio_path.read_bytes()
    events = turn_events(
        server,
        text=request.text,
        audio_bytes=audio_bytes,
        persona_id=request.persona,
        api_key=request.api_key,
    )
    session = next(events)  # the `session` event tells the frame rate
    result, extra = stream_to_mp4(events, fps=session["fps"], out=request.out)
    return summarize(result, extra, request.out)
