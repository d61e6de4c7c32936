"""The in-process pipeline with the registered fake backends (no models, no Ray)."""

import time

import numpy as np
import pytest

from services.core.backend import BackendError
from services.core.config import AppConfig
from services.core.types import (
    AudioChunk,
    ChatMessage,
    ReplyChunk,
    SpeechChunk,
    Transcript,
    VideoFrame,
)
from services.turn.pipeline import Pipeline, TurnInputError, TurnPlan, TurnResult

REPLY = "First sentence here. Second one follows. Third is last. Fourth is cut."


def make_pipeline(**llm_options) -> Pipeline:
    config = AppConfig(
        stages={
            "asr": {"backend": "fake", "options": {"text": "What is your name?"}},
            "llm": {"backend": "fake", "options": {"reply": REPLY, **llm_options}},
            "tts": {"backend": "fake"},
            "render": {"backend": "fake"},
        },
        turn={"max_sentences": 3, "first_clause_chars": None},
    )
    pipeline = Pipeline.from_config(config)
    pipeline.load()
    return pipeline


def run(pipeline, **kwargs):
    return list(pipeline.run_turn(**kwargs))


def test_a_text_turn_streams_every_kind_of_event_in_order():
    events = run(make_pipeline(), text="Hello")
    assert isinstance(events[0], Transcript) and events[0].text == "Hello"
    assert isinstance(events[-1], TurnResult)
    replies = [e for e in events if isinstance(e, ReplyChunk)]
    speech = [e for e in events if isinstance(e, SpeechChunk)]
    frames = [e for e in events if isinstance(e, VideoFrame)]
    assert [r.text for r in replies] == ["First sentence here.", "Second one follows.",
                                         "Third is last."]  # fmt: skip
    assert events[-1].reply == "First sentence here. Second one follows. Third is last."
    # Speech chunks are laid back to back on the turn timeline.
    assert speech[0].start_s == 0.0
    for before, after in zip(speech, speech[1:], strict=False):
        assert after.start_s == pytest.approx(before.end_s)
    # Frames are gap-free and cover the whole reply audio.
    assert [f.index for f in frames] == list(range(len(frames)))
    fps = make_pipeline().render.fps
    assert len(frames) == pytest.approx(speech[-1].end_s * fps, abs=1)
    timings = events[-1].timings
    assert timings["reply_audio_s"] == pytest.approx(speech[-1].end_s)
    assert timings["frames"] == len(frames)
    assert 0 < timings["time_to_first_frame_s"] <= timings["total_s"]


def test_an_audio_turn_transcribes_first():
    audio = AudioChunk(np.zeros(16000, dtype=np.float32), 16000)
    events = run(make_pipeline(), audio=audio)
    assert events[0].text == "What is your name?"
    assert events[-1].timings["asr_s"] > 0


def test_first_frame_exists_long_before_the_reply_is_generated():
    # A slow LLM: ~0.05 s per word, 12 words -> the whole reply takes ~0.6 s to generate.
    pipeline = make_pipeline(per_token_s=0.05)
    start = time.perf_counter()
    first_frame_at = None
    for event in pipeline.run_turn(text="Hi"):
        if isinstance(event, VideoFrame) and first_frame_at is None:
            first_frame_at = time.perf_counter() - start
        if isinstance(event, TurnResult):
            llm_done = event.timings["llm_done_s"]
    assert first_frame_at is not None
    assert first_frame_at < llm_done


def test_history_and_system_prompt_reach_the_llm():
    pipeline = make_pipeline()
    history = [ChatMessage("user", "earlier"), ChatMessage("assistant", "reply")]
    plan = pipeline.default_plan("now", history)
    assert plan.messages[0].role == "system"
    assert [m.content for m in plan.messages[1:]] == ["earlier", "reply", "now"]


def test_a_canned_plan_skips_the_llm_and_filters_sentences():
    pipeline = make_pipeline(failure_rate=1.0)  # the LLM would fail if it were called

    def planner(text, history):
        return TurnPlan(canned_reply="I am an AI. Nice to meet you.",
                        sentence_filter=str.upper, metadata={"kind": "greeting"})  # fmt: skip

    events = run(pipeline, text="Hi", planner=planner)
    assert events[-1].reply == "I AM AN AI. NICE TO MEET YOU."
    assert events[-1].metadata == {"kind": "greeting"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": "   "}, "text is empty"),
        ({"text": "x" * 3000}, "limit is 2000"),
        ({}, "exactly one"),
        ({"audio": AudioChunk(np.zeros(16000 * 31, dtype=np.float32), 16000)}, "limit is 30"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs, message):
    with pytest.raises(TurnInputError, match=message):
        run(make_pipeline(), **kwargs)


def test_a_failing_stage_raises_instead_of_hanging():
    with pytest.raises(BackendError, match="fake LLM failure"):
        run(make_pipeline(failure_rate=1.0), text="Hi")


def test_closing_the_stream_early_stops_the_workers():
    pipeline = make_pipeline(per_token_s=0.02)
    stream = pipeline.run_turn(text="Hi")
    next(stream)
    next(stream)
    stream.close()
    # The pipeline is reusable right away.
    assert isinstance(run(pipeline, text="again")[-1], TurnResult)
