"""Sessions, personas and turns as the router runs them, on fake backends (no Ray)."""

from __future__ import annotations

import asyncio
import base64
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from services.core.config import AppConfig, PersonaSettings, StorageSettings
from services.core.types import ChatMessage
from services.persona.library import PACKS_DIR
from services.persona.pack import write_pack
from services.persona.personas import Personas
from services.server.conversation import Conversation
from services.server.requests import ApiError, TurnInput
from services.storage.database import open_storage
from services.turn.pipeline import Pipeline

DEMO = "maya-castellan"


def theo_pack(root: Path) -> None:
    """A second persona with its own voice and look."""
    config = yaml.safe_load((PACKS_DIR / DEMO / "persona.yaml").read_text())
    config.update(
        id="theo-brandt",
        display_name="Theo Brandt",
        short_name="Theo",
        role="head chef of a fictional harbour restaurant",
        greeting="Hello! I'm an AI version of Theo Brandt. Ask me about cooking.",
        topics_to_avoid=[{"name": "secret_sauce", "keywords": ["secret sauce"]}],
        voice={"piper_voice": "voices/theo.onnx", "speed": 1.2},
        look={"skin_rgb": [0.45, 0.3, 0.2], "background_rgb": [0.9, 0.9, 0.85]},
    )
    config["consent"] = dict(
        config["consent"],
        granted_by="Theo Brandt (fictional)",
        scope=["statements", "voice", "likeness"],
    )
    corpus = {"kitchen.md": "We bake sourdough bread every morning at five.\n\n"
                            "Our fish comes from the harbour boats each day.\n"}  # fmt: skip
    write_pack(root / "theo-brandt", config, corpus)


@pytest.fixture
def conversation(tmp_path, monkeypatch):
    packs = tmp_path / "packs"
    shutil.copytree(PACKS_DIR / DEMO, packs / DEMO)
    theo_pack(packs)
    settings = PersonaSettings(
        packs_dir=str(packs), index_dir=str(tmp_path / "index"), embedder="hashing"
    )
    config = AppConfig(stages={s: {"backend": "fake"} for s in ("asr", "llm", "tts", "render")})
    pipeline = Pipeline.from_config(config)
    pipeline.load()
    monkeypatch.delenv("AVATAR_DATABASE_URL", raising=False)  # the SQLite file below, always
    storage = open_storage(StorageSettings(sqlite_path=str(tmp_path / "avatar.sqlite3")))
    personas = Personas(settings, storage.transcripts)
    yield Conversation(
        pipeline.stages, pipeline.turn, storage.sessions, fps=25.0, personas=personas
    )
    personas.close()
    storage.close()


def collect(agen) -> list[dict]:
    async def run():
        return [event async for event in agen]

    return asyncio.run(run())


def turn(conversation, session, text) -> list[dict]:
    return collect(conversation.turn_events(session, TurnInput(text=text)))


def pitch(events) -> float:
    audio = next(e for e in events if e["type"] == "audio")
    pcm = np.frombuffer(base64.b64decode(audio["pcm16_b64"]), dtype="<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(pcm))
    return float(np.argmax(spectrum[1:]) + 1) * audio["sample_rate"] / len(pcm)


def first_frame_colour(events) -> np.ndarray:
    from services.stages.render.jpeg import decode_jpeg

    frame = next(e for e in events if e["type"] == "frame")
    return decode_jpeg(base64.b64decode(frame["jpeg_b64"]))[2, 2].astype(int)


def test_two_personas_side_by_side_sound_and_look_different(conversation):
    maya = conversation.open_session(DEMO)
    theo = conversation.open_session("theo-brandt")
    question = "Are you a real person?"  # a disclosure: answered the same way by both
    maya_events, theo_events = (
        turn(conversation, maya, question),
        turn(conversation, theo, question),
    )
    for events, persona in ((maya_events, DEMO), (theo_events, "theo-brandt")):
        done = events[-1]
        assert done["type"] == "done"
        assert done["metadata"]["persona_id"] == persona
        assert done["metadata"]["kind"] == "disclosure"
        assert done["metadata"]["disclosure"]["ai_generated"] is True
    assert abs(pitch(maya_events) - pitch(theo_events)) > 5
    assert np.abs(first_frame_colour(maya_events) - first_frame_colour(theo_events)).sum() > 30


def test_persona_session_starts_with_a_spoken_disclosure(conversation):
    session = conversation.open_session(DEMO)
    event = conversation.session_event(session)
    assert event["disclosure"]["ai_generated"] is True and event["persona_id"] == DEMO
    greeting = collect(conversation.greeting_events(session))
    assert "AI version of Maya" in greeting[-1]["reply"]
    assert greeting[-1]["metadata"]["kind"] == "greeting"
    assert any(e["type"] == "frame" for e in greeting)


def test_every_turn_is_in_the_audit_log_even_when_it_fails(conversation):
    session = conversation.open_session(DEMO)
    turn(conversation, session, "Are you a bot?")
    store = conversation.personas.store
    records = store.turns(session_id=session.id)
    assert [r.status for r in records] == ["ok"]
    assert records[0].user_text == "Are you a bot?" and "AI" in records[0].reply

    failing = conversation.stages.tts.__class__.from_options({"failure_rate": 1.0})
    failing.load()
    conversation.stages.tts = failing
    events = turn(conversation, session, "Tell me about Fernwick's first inspection product.")
    assert events[-1]["type"] == "error" and events[-1]["status"] == 500
    records = store.turns(session_id=session.id)
    assert records[-1].user_text.startswith("Tell me about Fernwick")
    assert records[-1].status == "error"
    # The history the LLM sees is read from the same rows: the failed turn is not in it.
    assert conversation.sessions.history(session.id) == [
        ChatMessage("user", "Are you a bot?"),
        ChatMessage("assistant", records[0].reply),
    ]


def test_unknown_persona_is_a_404_listing_the_valid_ones(conversation):
    with pytest.raises(ApiError) as info:
        conversation.open_session("nobody")
    assert info.value.status == 404
    assert DEMO in info.value.reason and "theo-brandt" in info.value.reason


def test_plain_chat_turns_still_carry_a_disclosure(conversation):
    session = conversation.open_session(None)
    events = turn(conversation, session, "Hello")
    assert events[-1]["metadata"]["disclosure"] == {"ai_generated": True, "persona_id": None}
    history = conversation.sessions.history(session.id)
    assert [m.role for m in history] == ["user", "assistant"]


def test_plain_chat_turns_are_logged_once_and_are_the_history(conversation):
    session = conversation.open_session(None)
    first = turn(conversation, session, "Hello")
    second = turn(conversation, session, "How are you?")
    records = conversation.sessions.transcripts.turns(session_id=session.id)
    assert [(r.persona_id, r.status, r.user_text) for r in records] == [
        (None, "ok", "Hello"),
        (None, "ok", "How are you?"),
    ]
    assert [r.reply for r in records] == [first[-1]["reply"], second[-1]["reply"]]
    assert conversation.sessions.history(session.id) == [
        ChatMessage("user", "Hello"),
        ChatMessage("assistant", first[-1]["reply"]),
        ChatMessage("user", "How are you?"),
        ChatMessage("assistant", second[-1]["reply"]),
    ]


def test_a_turn_the_client_abandons_is_logged_as_cancelled(conversation):
    session = conversation.open_session(DEMO)

    async def abandon() -> None:
        events = conversation.turn_events(session, TurnInput(text="Tell me about Fernwick."))
        async for event in events:
            if event["type"] == "reply":  # planned and logged, still speaking
                break
        await events.aclose()

    asyncio.run(abandon())
    (record,) = conversation.sessions.transcripts.turns(session_id=session.id)
    assert (record.status, record.user_text) == ("cancelled", "Tell me about Fernwick.")
    assert conversation.sessions.history(session.id) == []
