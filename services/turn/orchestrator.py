"""One conversational turn, streamed through four stages, sentence by sentence.

The same async logic runs in process (`services.turn.pipeline.LocalStages`, backends in threads) and
in the cluster (the router's Ray Serve handles): only the `Stages` implementation differs.
Stages overlap: the LLM releases a sentence as soon as it is complete, TTS synthesises it while
the LLM goes on, and frames for each speech chunk stream out while the next sentence is being
synthesised. The first frame exists after ASR + first sentence + its speech + one frame.

`run_turn` yields, in order of availability: the `Transcript`, for a persona a `TurnPlanned`
(its sources), `ReplyChunk`s, `SpeechChunk`s, `VideoFrame`s, and finally one `TurnResult` with
the timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.core.backend import BackendError
from services.core.config import TurnSettings
from services.core.types import (
    AudioChunk,
    AvatarLook,
    ChatMessage,
    ReplyChunk,
    SpeechChunk,
    Transcript,
    VideoFrame,
)
from services.stages.llm.base import LLMBackend
from services.stages.llm.sentences import sentences


class TurnInputError(ValueError):
    """The user's input cannot start a turn (empty text, audio too long, ...)."""


@dataclass(frozen=True)
class TurnPlan:
    """What to say for one turn: either LLM messages or a fixed reply (greeting, refusal).

    Persona planning (`services.persona`) produces these; without a persona the turn is a plain
    chat turn from the configured system prompt.
    """

    messages: tuple[ChatMessage, ...] | None = None
    canned_reply: str | None = None
    voice: str | None = None
    speed: float = 1.0
    look: AvatarLook | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    sentence_filter: Callable[[str], str] | None = None


Planner = Callable[[str, Sequence[ChatMessage]], TurnPlan]


@dataclass(frozen=True)
class TurnPlanned:
    """A persona turn was planned: what kind of answer, grounded on which statements. Sent
    before the reply, so a client can show the citations while the sentences are spoken."""

    kind: str
    sources: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class TurnResult:
    """The end of a turn: what was heard, what was said, and how long each part took."""

    transcript: Transcript
    reply: str
    timings: dict[str, float]
    metadata: dict[str, Any] = field(default_factory=dict)


class Stages(Protocol):
    """The four stages as async calls; in process or over Ray Serve handles."""

    async def transcribe(self, audio: AudioChunk) -> Transcript: ...

    def sentences(
        self, messages: Sequence[ChatMessage], turn: TurnSettings
    ) -> AsyncIterator[ReplyChunk]: ...

    async def synthesize(self, text: str, voice: str | None, speed: float) -> SpeechChunk: ...

    def render(
        self, speech: SpeechChunk, look: AvatarLook | None, video: str = "jpeg"
    ) -> AsyncIterator[VideoFrame]:
        """Frames of one sentence; `video` "h264": H.264 access units instead of JPEG/RGB."""
        ...


def llm_sentences(
    llm: LLMBackend, messages: Sequence[ChatMessage], turn: TurnSettings
) -> Iterator[ReplyChunk]:
    """Generate a reply and release it sentence by sentence, within the turn's bounds.

    Runs where the LLM runs (in process, or inside the LLM replica) so only sentences cross
    the network, each tagged with how many tokens it took.
    """
    start = time.perf_counter()
    first_token: list[float] = []

    def timed() -> Iterator[str]:
        stream = llm.stream(messages, max_tokens=turn.max_tokens, temperature=turn.temperature)
        try:
            for piece in stream:
                if not first_token:
                    first_token.append(time.perf_counter() - start)
                yield piece
        finally:
            stream.close()

    chunks = sentences(
        timed(), max_sentences=turn.max_sentences, first_clause_chars=turn.first_clause_chars
    )
    for chunk in chunks:
        if chunk.index == 0:
            chunk = dataclasses.replace(chunk, first_token_s=first_token[0])
        yield chunk
        if chunk.index == 0 and turn.llm_nice_after_first:
            _lower_priority(turn.llm_nice_after_first)


def _lower_priority(nice: int) -> None:
    """Lower this thread's CPU priority (and that of the threads it starts from now on, e.g.
    llama.cpp's compute threads). Each LLM stream runs in a thread of its own
    (`iterate_in_thread`), so only this reply's remaining decoding yields the cores; an
    unprivileged process cannot raise it back, which is why it is never applied to a shared
    thread."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: no per-thread priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def default_plan(turn: TurnSettings, user_text: str, history: Sequence[ChatMessage]) -> TurnPlan:
    """A plain chat turn: system prompt, recent history, the user's words."""
    keep = 2 * turn.history_turns
    recent = tuple(history[-keep:]) if keep else ()
    return TurnPlan(
        messages=(
            ChatMessage("system", turn.system_prompt),
            *recent,
            ChatMessage("user", user_text),
        )
    )


def check_text(turn: TurnSettings, text: str | None) -> str:
    cleaned = (text or "").strip()
    if not cleaned:
        raise TurnInputError("text is empty")
    if len(cleaned) > turn.max_input_chars:
        raise TurnInputError(
            f"text is {len(cleaned)} characters; the limit is {turn.max_input_chars}"
        )
    return cleaned


def check_audio(turn: TurnSettings, audio: AudioChunk) -> None:
    if audio.duration_s <= 0:
        raise TurnInputError("audio is empty")
    if audio.duration_s > turn.max_audio_s:
        raise TurnInputError(
            f"audio is {audio.duration_s:.1f} s long; the limit is {turn.max_audio_s} s"
        )


class _Clock:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.marks: dict[str, float] = {}
        self.sums: dict[str, float] = {}

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def first(self, name: str) -> None:
        self.marks.setdefault(name, self.now())

    def add(self, name: str, value: float) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + value


_DONE = object()


async def run_turn(
    stages: Stages,
    turn: TurnSettings,
    *,
    audio: AudioChunk | None = None,
    text: str | None = None,
    history: Sequence[ChatMessage] = (),
    planner: Planner | None = None,
    transcript: Transcript | None = None,
    video: str = "jpeg",
) -> AsyncIterator[Transcript | ReplyChunk | SpeechChunk | VideoFrame | TurnResult]:
    """Stream one turn. Exactly one of `audio` / `text` / `transcript` is the user's input
    (`transcript`: already recognised while the user spoke, by live listening)."""
    if sum(x is not None for x in (audio, text, transcript)) != 1:
        raise TurnInputError("give exactly one of audio, text or transcript")
    clock = _Clock()
    if transcript is not None:
        check_text(turn, transcript.text)
    elif audio is not None:
        check_audio(turn, audio)
        transcript = await stages.transcribe(audio)
        clock.marks["asr_s"] = clock.now()
    else:
        transcript = Transcript(text=check_text(turn, text))
    yield transcript
    if not transcript.text.strip():
        raise TurnInputError("no speech was recognised in the audio")
    plan = (planner or (lambda t, h: default_plan(turn, t, h)))(transcript.text, history)
    if "sources" in plan.metadata:  # a persona plan (plain chat cites nothing)
        sources = tuple(plan.metadata["sources"] or ())
        yield TurnPlanned(kind=str(plan.metadata.get("kind", "")), sources=sources)
    spoken = speak(stages, turn, plan, transcript=transcript, clock=clock, audio=audio, video=video)
    async for event in spoken:
        yield event


async def speak(
    stages: Stages,
    turn: TurnSettings,
    plan: TurnPlan,
    *,
    transcript: Transcript | None = None,
    clock: _Clock | None = None,
    audio: AudioChunk | None = None,
    video: str = "jpeg",
) -> AsyncIterator[ReplyChunk | SpeechChunk | VideoFrame | TurnResult]:
    """Say what `plan` says: reply sentences, their speech and frames, then the `TurnResult`.

    Used on its own for turns with no user input (a session's greeting).
    """
    clock = clock or _Clock()
    events: asyncio.Queue = asyncio.Queue()
    texts: asyncio.Queue = asyncio.Queue()
    tasks = [
        asyncio.create_task(_produce_text(stages, turn, plan, clock, texts, events)),
        asyncio.create_task(_produce_speech(stages, plan, clock, texts, events)),
    ]
    reply: list[str] = []
    frames, audio_end = 0, 0.0
    try:
        while True:
            item = await events.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, ReplyChunk):
                reply.append(item.text)
            elif isinstance(item, SpeechChunk):
                audio_end = item.end_s
                start = time.perf_counter()
                # aclosing: a turn cancelled mid-sentence (barge-in) stops the render stream
                # (and its replica) now, not whenever the generator is garbage-collected.
                rendering = stages.render(item, plan.look, video)
                async with contextlib.aclosing(rendering) as rendered:
                    async for frame in rendered:
                        clock.first("first_frame_s")
                        clock.add("render_s", time.perf_counter() - start)
                        frames += 1
                        yield frame
                        start = time.perf_counter()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    yield TurnResult(
        transcript=transcript or Transcript(text=""),
        reply=" ".join(reply),
        timings=_timings(clock, audio, audio_end, frames),
        metadata=dict(plan.metadata),
    )


async def _canned(text: str, turn: TurnSettings) -> AsyncIterator[ReplyChunk]:
    for chunk in sentences([text], max_sentences=turn.max_sentences):
        yield chunk


async def _produce_text(stages, turn, plan: TurnPlan, clock, texts, events) -> None:
    try:
        if plan.canned_reply is not None:
            chunks = _canned(plan.canned_reply, turn)
        elif plan.messages:
            clock.marks["llm_start_s"] = clock.now()
            chunks = stages.sentences(plan.messages, turn)
        else:
            raise BackendError("turn plan has neither messages nor a reply")
        async for chunk in chunks:
            clock.first("llm_first_sentence_s")
            if chunk.first_token_s is not None:
                clock.marks["llm_ttft_s"] = chunk.first_token_s
            clock.add("llm_tokens", chunk.tokens)
            if plan.sentence_filter is not None:
                chunk = dataclasses.replace(chunk, text=plan.sentence_filter(chunk.text))
            if not chunk.text:
                continue
            events.put_nowait(chunk)
            texts.put_nowait(chunk)
        clock.marks["llm_done_s"] = clock.now()
        texts.put_nowait(_DONE)
    except Exception as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
        events.put_nowait(exc)


async def _produce_speech(stages, plan: TurnPlan, clock, texts, events) -> None:
    cursor = 0.0
    try:
        while True:
            chunk = await texts.get()
            if chunk is _DONE:
                break
            start = time.perf_counter()
            speech = await stages.synthesize(chunk.text, plan.voice, plan.speed)
            clock.add("tts_s", time.perf_counter() - start)
            clock.first("first_audio_s")
            speech = dataclasses.replace(speech, index=chunk.index, start_s=cursor)
            cursor = speech.end_s
            events.put_nowait(speech)
        events.put_nowait(_DONE)
    except Exception as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
        events.put_nowait(exc)


def _timings(clock: _Clock, audio: AudioChunk | None, reply_audio_s: float, frames: int):
    total = clock.now()
    marks, sums = clock.marks, clock.sums
    llm_start = marks.get("llm_start_s")
    llm_time = marks.get("llm_done_s", 0.0) - (llm_start or 0.0)
    render_s, tts_s = sums.get("render_s", 0.0), sums.get("tts_s", 0.0)
    asr_s = marks.get("asr_s", 0.0)
    return {
        "asr_s": asr_s,
        "llm_ttft_s": marks.get("llm_ttft_s", 0.0),
        "llm_first_sentence_s": marks.get("llm_first_sentence_s", 0.0),
        "llm_done_s": marks.get("llm_done_s", 0.0),
        "llm_tokens": sums.get("llm_tokens", 0.0),
        "llm_tokens_per_s": sums.get("llm_tokens", 0.0) / llm_time if llm_time > 0 else 0.0,
        "time_to_first_audio_s": marks.get("first_audio_s", 0.0),
        "time_to_first_frame_s": marks.get("first_frame_s", 0.0),
        "total_s": total,
        "reply_audio_s": reply_audio_s,
        "frames": float(frames),
        "tts_s": tts_s,
        "tts_rtf": tts_s / reply_audio_s if reply_audio_s else 0.0,
        "render_s": render_s,
        "render_fps": frames / render_s if render_s else 0.0,
        "asr_rtf": asr_s / audio.duration_s if audio is not None else 0.0,
        # End-to-end real-time factor: < 1 means the reply was produced faster than it plays.
        "rtf": total / reply_audio_s if reply_audio_s else 0.0,
    }
