"""The in-process pipeline: one conversational turn streamed through the four stages.

Stages overlap sentence by sentence: the LLM thread releases a sentence as soon as it is
complete, the TTS thread synthesises it while the LLM goes on, and the caller's thread renders
frames for each speech chunk as it arrives. The first frame therefore exists after
ASR + first sentence + its speech, long before the reply is finished.

`run_turn` yields, in order of availability: the `Transcript`, `ReplyChunk`s, `SpeechChunk`s,
`VideoFrame`s, and finally one `TurnResult` with the timings.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.asr.base import ASRBackend
from services.backend import BackendError
from services.config import PipelineConfig, TurnSettings
from services.llm.base import LLMBackend
from services.llm.sentences import sentences
from services.registry import create_backend
from services.render.base import RenderBackend
from services.tts.base import TTSBackend
from services.types import (
    AudioChunk,
    AvatarLook,
    ChatMessage,
    ReplyChunk,
    SpeechChunk,
    Transcript,
    VideoFrame,
)


class TurnInputError(ValueError):
    """The user's input cannot start a turn (empty text, audio too long, ...)."""


@dataclass(frozen=True)
class TurnPlan:
    """What to say for one turn: either LLM messages or a fixed reply (greeting, refusal).

    Persona planning (`services.persona`) produces these; without a persona the pipeline plans
    a plain chat turn from the configured system prompt.
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
class TurnResult:
    """The end of a turn: what was heard, what was said, and how long each part took."""

    transcript: Transcript
    reply: str
    timings: dict[str, float]
    metadata: dict[str, Any] = field(default_factory=dict)


class _Clock:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.marks: dict[str, float] = {}
        self.sums: dict[str, float] = {}
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def first(self, name: str) -> None:
        with self._lock:
            self.marks.setdefault(name, self.now())

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.sums[name] = self.sums.get(name, 0.0) + seconds


_DONE = object()


class Pipeline:
    """ASR -> LLM -> TTS -> render, streamed, in one process.

    Args:
        asr, llm, tts, render: loaded or loadable backends.
        turn: bounds on a turn.
    """

    def __init__(
        self,
        asr: ASRBackend,
        llm: LLMBackend,
        tts: TTSBackend,
        render: RenderBackend,
        turn: TurnSettings | None = None,
    ) -> None:
        self.asr, self.llm, self.tts, self.render = asr, llm, tts, render
        self.turn = turn or TurnSettings()

    @classmethod
    def from_config(cls, config: PipelineConfig) -> Pipeline:
        backends = {
            name: create_backend(name, config.stage(name).backend, config.stage(name).options)
            for name in ("asr", "llm", "tts", "render")
        }
        return cls(**backends, turn=config.turn)

    def load(self, stages: Sequence[str] = ("asr", "llm", "tts", "render")) -> dict[str, float]:
        """Load the named stages' models; returns load seconds per stage."""
        seconds = {}
        for name in stages:
            start = time.perf_counter()
            getattr(self, name).load()
            seconds[name] = time.perf_counter() - start
        return seconds

    def close(self) -> None:
        for backend in (self.asr, self.llm, self.tts, self.render):
            backend.close()

    # -- planning -----------------------------------------------------------------------------

    def default_plan(self, user_text: str, history: Sequence[ChatMessage]) -> TurnPlan:
        """A plain chat turn: system prompt, recent history, the user's words."""
        keep = 2 * self.turn.history_turns
        recent = tuple(history[-keep:]) if keep else ()
        messages = (
            ChatMessage("system", self.turn.system_prompt),
            *recent,
            ChatMessage("user", user_text),
        )
        return TurnPlan(messages=messages)

    def transcribe(self, audio: AudioChunk) -> Transcript:
        if audio.duration_s > self.turn.max_audio_s:
            raise TurnInputError(
                f"audio is {audio.duration_s:.1f} s long; the limit is {self.turn.max_audio_s} s"
            )
        if audio.duration_s <= 0:
            raise TurnInputError("audio is empty")
        return self.asr.transcribe(audio)

    # -- the turn -----------------------------------------------------------------------------

    def run_turn(
        self,
        *,
        audio: AudioChunk | None = None,
        text: str | None = None,
        history: Sequence[ChatMessage] = (),
        planner: Planner | None = None,
    ) -> Iterator[Transcript | ReplyChunk | SpeechChunk | VideoFrame | TurnResult]:
        """Stream one turn. Exactly one of `audio` / `text` is the user's input."""
        if (audio is None) == (text is None):
            raise TurnInputError("give exactly one of audio or text")
        clock = _Clock()
        if audio is not None:
            transcript = self.transcribe(audio)
            clock.marks["asr_s"] = clock.now()
        else:
            cleaned = (text or "").strip()
            if not cleaned:
                raise TurnInputError("text is empty")
            if len(cleaned) > self.turn.max_input_chars:
                raise TurnInputError(
                    f"text is {len(cleaned)} characters; the limit is {self.turn.max_input_chars}"
                )
            transcript = Transcript(text=cleaned)
        yield transcript
        if not transcript.text.strip():
            raise TurnInputError("no speech was recognised in the audio")

        plan = (planner or self.default_plan)(transcript.text, history)
        yield from self._speak(plan, transcript, clock, audio)

    def _speak(
        self,
        plan: TurnPlan,
        transcript: Transcript,
        clock: _Clock,
        audio: AudioChunk | None,
    ) -> Iterator[ReplyChunk | SpeechChunk | VideoFrame | TurnResult]:
        events: queue.Queue = queue.Queue()
        texts: queue.Queue = queue.Queue()
        stop = threading.Event()
        workers = [
            threading.Thread(
                target=self._llm_worker, args=(plan, clock, texts, events, stop), daemon=True
            ),
            threading.Thread(
                target=self._tts_worker, args=(plan, clock, texts, events, stop), daemon=True
            ),
        ]
        for worker in workers:
            worker.start()
        reply: list[str] = []
        frames = 0
        audio_s = 0.0
        try:
            while True:
                item = events.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, ReplyChunk) and item.text:
                    reply.append(item.text)
                elif isinstance(item, SpeechChunk):
                    audio_s = item.end_s
                    start = time.perf_counter()
                    for frame in self.render.render(item, look=plan.look):
                        clock.first("first_frame_s")
                        clock.add("render_s", time.perf_counter() - start)
                        frames += 1
                        yield frame
                        start = time.perf_counter()
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=30)
        yield TurnResult(
            transcript=transcript,
            reply=" ".join(reply),
            timings=self._timings(clock, transcript, audio, audio_s, frames),
            metadata=dict(plan.metadata),
        )

    def _llm_worker(self, plan, clock, texts, events, stop) -> None:
        try:
            if plan.canned_reply is not None:
                pieces: Iterator[str] = iter([plan.canned_reply])
            elif plan.messages:
                pieces = self._timed_pieces(plan.messages, clock, stop)
            else:
                raise BackendError("turn plan has neither messages nor a reply")
            chunks = sentences(
                pieces,
                max_sentences=self.turn.max_sentences,
                first_clause_chars=self.turn.first_clause_chars,
            )
            for chunk in chunks:
                if stop.is_set():
                    chunks.close()
                    break
                if plan.sentence_filter is not None and chunk.text:
                    chunk = dataclasses.replace(chunk, text=plan.sentence_filter(chunk.text))
                clock.first("llm_first_sentence_s")
                events.put(chunk)
                texts.put(chunk)
            clock.marks["llm_done_s"] = clock.now()
            texts.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - forwarded to the consumer thread
            texts.put(_DONE)
            events.put(exc)

    def _timed_pieces(self, messages, clock: _Clock, stop: threading.Event) -> Iterator[str]:
        clock.marks["llm_start_s"] = clock.now()
        stream = self.llm.stream(
            messages, max_tokens=self.turn.max_tokens, temperature=self.turn.temperature
        )
        tokens = 0
        try:
            for piece in stream:
                clock.first("llm_first_token_s")
                tokens += 1
                yield piece
                if stop.is_set():
                    return
        finally:
            stream.close()
            clock.add("llm_tokens", tokens)

    def _tts_worker(self, plan, clock, texts, events, stop) -> None:
        cursor = 0.0
        try:
            while not stop.is_set():
                chunk = texts.get()
                if chunk is _DONE:
                    break
                if not chunk.text:
                    continue
                start = time.perf_counter()
                speech = self.tts.synthesize(chunk.text, voice=plan.voice, speed=plan.speed)
                clock.add("tts_s", time.perf_counter() - start)
                clock.first("first_audio_s")
                speech = dataclasses.replace(speech, index=chunk.index, start_s=cursor)
                cursor = speech.end_s
                events.put(speech)
            events.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - forwarded to the consumer thread
            events.put(exc)

    @staticmethod
    def _timings(clock, transcript, audio, reply_audio_s, frames) -> dict[str, float]:
        total = clock.now()
        marks, sums = clock.marks, clock.sums
        llm_start = marks.get("llm_start_s")
        timings = {
            "asr_s": marks.get("asr_s", 0.0),
            "llm_ttft_s": marks["llm_first_token_s"] - llm_start
            if llm_start is not None and "llm_first_token_s" in marks
            else 0.0,
            "llm_first_sentence_s": marks.get("llm_first_sentence_s", 0.0),
            "llm_done_s": marks.get("llm_done_s", 0.0),
            "llm_tokens": sums.get("llm_tokens", 0.0),
            "time_to_first_audio_s": marks.get("first_audio_s", 0.0),
            "time_to_first_frame_s": marks.get("first_frame_s", 0.0),
            "total_s": total,
            "reply_audio_s": reply_audio_s,
            "frames": float(frames),
            "tts_s": sums.get("tts_s", 0.0),
            "render_s": sums.get("render_s", 0.0),
        }
        llm_time = marks.get("llm_done_s", 0.0) - (llm_start or 0.0)
        timings["llm_tokens_per_s"] = timings["llm_tokens"] / llm_time if llm_time > 0 else 0.0
        timings["tts_rtf"] = timings["tts_s"] / reply_audio_s if reply_audio_s else 0.0
        timings["render_fps"] = frames / timings["render_s"] if timings["render_s"] else 0.0
        timings["asr_rtf"] = (
            timings["asr_s"] / audio.duration_s if audio is not None and audio.duration_s else 0.0
        )
        # End-to-end real-time factor: < 1 means the turn was produced faster than it plays.
        timings["rtf"] = total / reply_audio_s if reply_audio_s else 0.0
        return timings
