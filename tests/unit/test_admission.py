"""Admission control (`services.server.admission`), without Ray: the capacity derived from the
stages' Serve options, refusals as 503 with a retry hint before anything runs, slots released
however a turn ends (even a stream that never started), and rejections counted."""

from __future__ import annotations

import asyncio
import gc

import pytest

from services.core.config import AppConfig
from services.core.registry import STAGES
from services.core.telemetry import Telemetry
from services.server.admission import Admission, capacity
from services.server.conversation import Conversation
from services.server.limits import RetryLater
from services.server.requests import TurnInput
from services.storage.sessions import SessionStore
from services.turn.pipeline import Pipeline


class Counted(Telemetry):
    def __init__(self) -> None:
        super().__init__()
        self.rejected: list[str] = []

    def inc(self, name: str, value: float = 1.0, **tags: str) -> None:
        if name == "avatar_requests_rejected":
            self.rejected.append(tags["reason"])


def config(limits: dict | None = None, **serve) -> AppConfig:
    stages = {s: {"backend": "fake", "serve": serve.get(s, {})} for s in STAGES}
    return AppConfig(stages=stages, router={"serve": serve.get("router", {})}, limits=limits or {})


def test_capacity_is_the_narrowest_stage_shared_over_the_routers():
    assert capacity(config()).turns == 8  # one replica x max_ongoing_requests 8 everywhere
    narrow = config(
        llm={"num_replicas": 2, "max_ongoing_requests": 3},
        tts={"autoscaling_config": {"min_replicas": 1, "max_replicas": 4}},
        render={"max_ongoing_requests": 5},
    )
    assert capacity(narrow).turns == 5 and capacity(narrow).source.startswith("render")
    routers = config(
        llm={"autoscaling_config": {"max_replicas": 8}, "max_ongoing_requests": 8},
        asr={"num_replicas": 8},
        tts={"num_replicas": 8},
        render={"num_replicas": 16, "max_ongoing_requests": 4},
        router={"autoscaling_config": {"min_replicas": 2, "max_replicas": 8}},
    )
    assert capacity(routers).turns == 8  # 64 slots over at most 8 router replicas
    tiny = config(llm={"max_ongoing_requests": 1}, router={"num_replicas": 4})
    assert capacity(tiny).turns == 1  # never 0
    assert capacity(config({"max_turns_in_flight": 3})).turns == 3


def test_past_capacity_is_a_503_with_a_retry_hint_and_counted():
    now = [0.0]
    telemetry = Counted()
    admission = Admission(2, telemetry=telemetry, clock=lambda: now[0])
    first, second = admission.acquire(), admission.acquire()
    with pytest.raises(RetryLater) as refused:
        admission.acquire()
    assert refused.value.status == 503 and refused.value.retry_after_s == 1  # nothing measured
    assert telemetry.rejected == ["turns_in_flight"]
    now[0] = 10.0
    first.release()
    first.release()  # idempotent
    assert admission.in_flight == 1
    third = admission.acquire()
    now[0] = 12.0
    with pytest.raises(RetryLater) as refused:
        admission.acquire()
    # Turns last ~10 s and the oldest has run 12 s: it should end any moment.
    assert refused.value.retry_after_s == 1
    with second, third:
        pass
    assert admission.in_flight == 0


def test_retry_hint_follows_turn_durations():
    now = [0.0]
    admission = Admission(1, clock=lambda: now[0])
    with admission.acquire():
        now[0] = 20.0
    held = admission.acquire()  # from t=20 (a dropped ticket would free its slot)
    now[0] = 25.0
    with pytest.raises(RetryLater) as refused:
        admission.acquire()
    assert refused.value.retry_after_s == 15  # a 20 s turn that has run 5 s
    held.release()


def test_a_dropped_ticket_gives_its_slot_back():
    admission = Admission(1)
    ticket = admission.acquire()
    del ticket
    gc.collect()
    assert admission.in_flight == 0
    assert Admission(None).acquire() is not None  # unbounded: only counted


def test_conversation_refuses_at_the_start_and_releases_at_the_end(tmp_path):
    cfg = config()
    pipeline = Pipeline.from_config(cfg)
    pipeline.load()
    admission = Admission(1)
    store = SessionStore(str(tmp_path / "s.sqlite3"))
    conversation = Conversation(
        pipeline.stages, pipeline.turn, store, fps=25.0, admission=admission
    )
    session = conversation.open_session()

    async def scenario() -> tuple[list[dict], list[dict]]:
        running = conversation.turn_events(session, TurnInput(text="Hello there"))
        first = await anext(running)  # the turn holds the only slot now
        refused = [e async for e in conversation.turn_events(session, TurnInput(text="Hi"))]
        rest = [first] + [e async for e in running]
        return refused, rest

    refused, completed = asyncio.run(scenario())
    assert [e["type"] for e in refused] == ["error"] and refused[0]["status"] == 503
    assert refused[0]["retry_after_s"] >= 1
    assert completed[-1]["type"] == "done"
    assert admission.in_flight == 0

    async def abandoned() -> None:
        events = conversation.turn_events(session, TurnInput(text="Hello"))
        await anext(events)
        await events.aclose()  # the client went away mid-turn

    asyncio.run(abandoned())
    assert admission.in_flight == 0
    ticket = conversation.admit(TurnInput(text="HTTP"))  # admitted before the response starts
    never_started = conversation.turn_events(session, TurnInput(text="HTTP"), ticket=ticket)
    del ticket, never_started  # the client left before the stream began
    gc.collect()
    assert admission.in_flight == 0
    store.close()
