"""Validation of what clients send, shared by the HTTP and WebSocket endpoints.

Every problem becomes an `ApiError` with an HTTP status and a one-line reason, so the router
answers 4xx with a JSON body instead of a traceback, and nothing is half-processed.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from services.core.audio import AudioError, decode_audio_bytes, resample
from services.core.types import AudioChunk, Transcript

AUDIO_TYPES = ("audio/", "application/octet-stream")
MAX_TEXT_CHARS = 100_000
# A persona id names a pack folder (one path component: 255 bytes on Linux), a session id a row.
MAX_ID_BYTES = 255
MAX_SAMPLE_RATE = 384_000


class ApiError(Exception):
    """A client error: `status` is the HTTP status, `reason` goes into the JSON body."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class TurnInput:
    """One parsed turn request."""

    text: str | None = None
    audio: AudioChunk | None = None
    # Recognised while the user spoke (live listening): the turn skips ASR.
    transcript: Transcript | None = None
    session_id: str | None = None
    persona_id: str | None = None


def _optional_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ApiError(422, f"{key} must be a string")
    if value is not None and not _is_utf8(value):
        # A lone surrogate (\ud800 in JSON) cannot be stored, logged or used as a path.
        raise ApiError(422, f"{key} is not valid Unicode text")
    return value


def _is_utf8(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def valid_text(value: Any, name: str) -> str:
    """A required, non-empty string of valid Unicode (422 otherwise)."""
    text = _optional_str({name: value}, name)
    if text is None or not text.strip():
        raise ApiError(422, f"{name} must be a non-empty string")
    return text


def check_id(value: Any, name: str) -> str | None:
    """An optional session or persona id from a client: a string of at most 255 UTF-8 bytes
    (422 otherwise), so a lookup never reaches the database or the file system malformed."""
    value = _optional_str({name: value}, name)
    if value is not None and len(value.encode()) > MAX_ID_BYTES:
        raise ApiError(422, f"{name} is longer than {MAX_ID_BYTES} bytes")
    return value


def decode_audio(data: bytes, max_bytes: int) -> AudioChunk:
    if not data:
        raise ApiError(400, "audio is empty")
    if len(data) > max_bytes:
        raise ApiError(413, f"audio is {len(data)} bytes; the limit is {max_bytes}")
    try:
        return decode_audio_bytes(data)
    except AudioError as exc:
        raise ApiError(415, str(exc)) from None


def pcm16_audio(data: bytes, sample_rate: int) -> AudioChunk:
    """Raw little-endian 16-bit mono PCM (what browsers' audio worklets usually send)."""
    import numpy as np

    if len(data) % 2:
        raise ApiError(400, "pcm16 audio has an odd number of bytes")
    samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if not len(samples):
        raise ApiError(400, "audio is empty")
    if not 8000 <= sample_rate <= MAX_SAMPLE_RATE:
        raise ApiError(422, f"sample_rate must lie within 8000..{MAX_SAMPLE_RATE}")
    if sample_rate > 48000:
        samples, sample_rate = resample(samples, sample_rate, 16000), 16000
    return AudioChunk(samples, sample_rate)


def parse_turn_json(body: bytes, max_audio_bytes: int) -> TurnInput:
    """`{"text": ...}` or `{"audio_b64": ...}`, plus optional session_id / persona_id."""
    try:
        data = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "the body must be a JSON object")
    unknown = set(data) - {"text", "audio_b64", "session_id", "persona_id"}
    if unknown:
        raise ApiError(422, f"unknown fields: {', '.join(sorted(unknown))}")
    text, audio_b64 = _optional_str(data, "text"), _optional_str(data, "audio_b64")
    if (text is None) == (audio_b64 is None):
        raise ApiError(422, "give exactly one of text or audio_b64")
    audio = None
    if audio_b64 is not None:
        try:
            raw = base64.b64decode(audio_b64, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(422, "audio_b64 is not valid base64") from None
        audio = decode_audio(raw, max_audio_bytes)
    elif not text.strip():
        raise ApiError(422, "text is empty")
    elif len(text) > MAX_TEXT_CHARS:
        raise ApiError(413, f"text is {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    return TurnInput(
        text=text,
        audio=audio,
        session_id=check_id(data.get("session_id"), "session_id"),
        persona_id=check_id(data.get("persona_id"), "persona_id"),
    )


def parse_turn_request(
    content_type: str, body: bytes, query: dict[str, str], max_audio_bytes: int
) -> TurnInput:
    """A turn request: JSON, or a raw audio body with session/persona in the query string."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "application/json":
        return parse_turn_json(body, max_audio_bytes)
    if kind.startswith(AUDIO_TYPES):
        return TurnInput(
            audio=decode_audio(body, max_audio_bytes),
            session_id=check_id(query.get("session_id"), "session_id"),
            persona_id=check_id(query.get("persona_id"), "persona_id"),
        )
    raise ApiError(
        415,
        f"unsupported content type {kind or '(none)'!r}; "
        "send application/json or an audio file (audio/wav, audio/ogg, ...)",
    )
