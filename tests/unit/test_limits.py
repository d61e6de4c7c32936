"""Per-key limits (`services.server.limits`): open sessions counted in the database, turns and
audio seconds in a moving minute; refusals are 429 with a retry hint, 0 means unlimited, a
tenant's own limits replace the defaults, and keyless (open mode) callers are not limited.
Also the origin policy of browsers (`services.server.origins`)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from services.core.config import ApiLimits, AppConfig, StorageSettings
from services.core.telemetry import Telemetry
from services.core.types import AudioChunk
from services.server.admission import Admission
from services.server.auth import Principal
from services.server.conversation import Conversation
from services.server.limits import KeyLimiter, RetryLater, error_event, error_headers
from services.server.origins import OriginPolicy
from services.server.requests import ApiError, TurnInput
from services.storage.database import open_storage
from services.turn.pipeline import Pipeline


class Counted(Telemetry):
    def __init__(self) -> None:
        super().__init__()
        self.rejected: list[str] = []

    def inc(self, name: str, value: float = 1.0, **tags: str) -> None:
        if name == "avatar_requests_rejected":
            self.rejected.append(tags["reason"])


@pytest.fixture
def storage(tmp_path, monkeypatch):
    monkeypatch.delenv("AVATAR_DATABASE_URL", raising=False)
    settings = StorageSettings(sqlite_path=str(tmp_path / "a.sqlite3"), session_ttl_s=600)
    with open_storage(settings) as opened:
        yield opened


def limiter(storage=None, telemetry=None, **per_key) -> KeyLimiter:
    limits = ApiLimits(per_key=per_key, tenants={"big": {"turns_per_minute": 100}})
    return KeyLimiter(limits, storage.sessions if storage else None, telemetry)


def test_turns_per_minute_are_429_with_a_retry_hint_and_counted():
    telemetry = Counted()
    keys = limiter(telemetry=telemetry, turns_per_minute=3, audio_s_per_minute=0)
    for _ in range(3):
        keys.check_turn("k1", "acme")
        keys.charge_turn("k1", "acme")
    with pytest.raises(RetryLater) as refused:
        keys.check_turn("k1", "acme")
    assert refused.value.status == 429 and "3 turns per minute" in refused.value.reason
    assert 1 <= refused.value.retry_after_s <= 60
    assert error_headers(refused.value) == {"Retry-After": str(refused.value.retry_after_s)}
    event = error_event(refused.value)
    assert event["type"] == "error" and event["status"] == 429
    assert event["retry_after_s"] == refused.value.retry_after_s
    assert telemetry.rejected == ["key_turns_per_minute"]
    keys.check_turn("k2", "acme")  # another key has its own budget
    keys.check_turn(None, None)  # open mode: no key, no per-key limit
    for _ in range(10):
        keys.check_turn("k3", "big")  # the tenant's own limit (100) replaces the default
        keys.charge_turn("k3", "big")


def test_the_window_moves(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])  # the limits library reads time.time()
    keys = limiter(turns_per_minute=2, audio_s_per_minute=0)
    for _ in range(2):
        keys.charge_turn("k", "acme")
    with pytest.raises(RetryLater) as refused:
        keys.check_turn("k", "acme")
    assert refused.value.retry_after_s == 60
    now[0] += 30
    with pytest.raises(RetryLater) as refused:
        keys.check_turn("k", "acme")
    assert refused.value.retry_after_s == 30
    now[0] += 31
    keys.check_turn("k", "acme")


def test_audio_seconds_per_minute_count_each_clip_rounded_up():
    keys = limiter(turns_per_minute=0, audio_s_per_minute=10)
    keys.check_turn("k", "acme", 4.2)
    keys.charge_turn("k", "acme", 4.2)  # 5 s
    keys.charge_turn("k", "acme", 4.0)  # 9 s
    keys.check_turn("k", "acme", 0.5)  # 1 s more fits
    keys.check_turn("k", "acme")  # text turns cost no audio
    with pytest.raises(RetryLater, match="10 s of audio per minute"):
        keys.check_turn("k", "acme", 1.5)
    with pytest.raises(ApiError) as too_long:
        keys.check_turn("other", "acme", 11.0)  # could never fit: not "retry later"
    assert too_long.value.status == 413 and not isinstance(too_long.value, RetryLater)


def test_zero_is_unlimited():
    keys = limiter(turns_per_minute=0, audio_s_per_minute=0, max_sessions=0)
    for _ in range(500):
        keys.check_turn("k", "acme", 30.0)
        keys.charge_turn("k", "acme", 30.0)
    keys.check_session("k", "acme")


def test_open_sessions_are_counted_per_key_in_the_database(storage):
    telemetry = Counted()
    keys = limiter(storage, telemetry, max_sessions=2)
    for _ in range(2):
        keys.check_session("k1", "acme")
        storage.sessions.create(None, tenant="acme", owner_key_id="k1")
    storage.sessions.create(None, tenant="acme", owner_key_id="k2")
    storage.sessions.create(None)  # open mode: nobody's
    with pytest.raises(RetryLater) as refused:
        keys.check_session("k1", "acme")
    assert refused.value.status == 429 and "2 open sessions" in refused.value.reason
    assert 590 <= refused.value.retry_after_s <= 600  # until the oldest session expires
    assert telemetry.rejected == ["key_sessions"]
    keys.check_session("k2", "acme")
    keys.check_session(None, None)


def limited_conversation(storage, **per_key) -> Conversation:
    """A conversation on fake stages whose keys get `limits.per_key`; also test_live_limits'."""
    config = AppConfig(stages={s: {"backend": "fake"} for s in ("asr", "llm", "tts", "render")})
    pipeline = Pipeline.from_config(config)
    pipeline.load()
    return Conversation(
        pipeline.stages,
        pipeline.turn,
        storage.sessions,
        fps=25.0,
        limiter=KeyLimiter(ApiLimits(per_key=per_key), storage.sessions),
        admission=Admission(4),
    )


def test_conversation_applies_the_limits_before_a_turn_starts(storage):
    conversation = limited_conversation(storage, max_sessions=1, turns_per_minute=1)
    key = Principal("acme", "abc123abc123", None, False, False)
    session = conversation.open_session(None, key)
    with pytest.raises(RetryLater):
        conversation.open_session(None, key)

    async def turn() -> list[dict]:
        return [e async for e in conversation.turn_events(session, TurnInput(text="Hello"))]

    assert asyncio.run(turn())[-1]["type"] == "done"
    assert conversation.admission.in_flight == 0
    refused = asyncio.run(turn())  # the WebSocket path: one `error` event, nothing streamed
    assert [e["type"] for e in refused] == ["error"]
    assert refused[0]["status"] == 429 and refused[0]["retry_after_s"] >= 1
    with pytest.raises(RetryLater):  # the HTTP path: before the response starts
        conversation.admit(TurnInput(text="again"), key.key_id, key.tenant)
    audio = AudioChunk(np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(RetryLater):
        conversation.admit(TurnInput(audio=audio), key.key_id, key.tenant)
    assert conversation.admission.in_flight == 0


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, "api.example.com", True),  # not a browser
        ("https://api.example.com", "api.example.com", True),  # same origin
        ("https://api.example.com", "api.example.com:443", True),
        ("http://localhost:8000", "localhost:8000", True),
        ("http://localhost:8000", "localhost:8001", False),
        ("https://app.example.com", "api.example.com", True),  # listed
        ("https://APP.example.com/", "api.example.com", True),
        ("https://evil.example.net", "api.example.com", False),
        ("null", "api.example.com", False),
        ("https://api.example.com:99999", "api.example.com", False),
        ("https://api.example.com", None, False),
    ],
)
def test_origin_policy(origin, host, allowed):
    assert OriginPolicy(["https://app.example.com"]).allows(origin, host) is allowed


def test_a_foreign_origin_is_403():
    policy = OriginPolicy()
    policy.check({"host": "api:8000"})
    with pytest.raises(ApiError) as refused:
        policy.check({"origin": "https://evil.example.net", "host": "api:8000"})
    assert refused.value.status == 403 and "evil" in refused.value.reason
