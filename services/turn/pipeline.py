"""The in-process pipeline: the four local backends behind the shared turn orchestrator.

`LocalStages` runs each blocking backend call in a worker thread so the stages overlap;
`Pipeline.run_turn` is the synchronous face used by `avatar talk` and the benchmarks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence

from services.core.config import AppConfig, TurnSettings
from services.core.registry import create_backend
from services.core.streams import drive, iterate_in_thread
from services.core.types import (
    AudioChunk,
    AvatarLook,
    ChatMessage,
    ReplyChunk,
    SpeechChunk,
    Transcript,
    VideoFrame,
)
from services.stages.asr.base import ASRBackend
from services.stages.llm.base import LLMBackend
from services.stages.render.base import RenderBackend
from services.stages.render.h264 import encode_h264
from services.stages.tts.base import TTSBackend
from services.turn.orchestrator import (
    Planner,
    TurnInputError,
    TurnPlan,
    TurnResult,
    default_plan,
    llm_sentences,
    run_turn,
)

__all__ = ["LocalStages", "Pipeline", "TurnInputError", "TurnPlan", "TurnResult"]

STAGE_NAMES = ("asr", "llm", "tts", "render")


class LocalStages:
    """The `Stages` protocol over in-process backends."""

    def __init__(
        self, asr: ASRBackend, llm: LLMBackend, tts: TTSBackend, render: RenderBackend
    ) -> None:
        self.asr, self.llm, self.tts, self.renderer = asr, llm, tts, render

    async def transcribe(self, audio: AudioChunk) -> Transcript:
        return await asyncio.to_thread(self.asr.transcribe, audio)

    def sentences(
        self, messages: Sequence[ChatMessage], turn: TurnSettings
    ) -> AsyncIterator[ReplyChunk]:
        return iterate_in_thread(lambda: llm_sentences(self.llm, messages, turn))

    async def synthesize(self, text: str, voice: str | None, speed: float) -> SpeechChunk:
        return await asyncio.to_thread(self.tts.synthesize, text, voice=voice, speed=speed)

    def render(
        self, speech: SpeechChunk, look: AvatarLook | None, video: str = "jpeg"
    ) -> AsyncIterator[VideoFrame]:
        if video == "h264":  # encoded here, in the worker thread, like a render replica does
            fps = self.renderer.fps
            return iterate_in_thread(
                lambda: encode_h264(self.renderer.render(speech, look=look), fps)
            )
        return iterate_in_thread(lambda: self.renderer.render(speech, look=look))


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
        self.stages = LocalStages(asr, llm, tts, render)

    @classmethod
    def from_config(cls, config: AppConfig) -> Pipeline:
        """The stages and turn bounds of an app config (its Serve options are not used here)."""
        backends = {
            name: create_backend(name, config.stage(name).backend, config.stage(name).options)
            for name in STAGE_NAMES
        }
        return cls(**backends, turn=config.turn)

    def load(self, stages: Sequence[str] = STAGE_NAMES) -> dict[str, float]:
        """Load the named stages' models; returns load seconds per stage."""
        seconds = {}
        for name in stages:
            start = time.perf_counter()
            getattr(self, name).load()
            seconds[name] = time.perf_counter() - start
        return seconds

    def close(self) -> None:
        for name in STAGE_NAMES:
            getattr(self, name).close()

    def default_plan(self, user_text: str, history: Sequence[ChatMessage]) -> TurnPlan:
        return default_plan(self.turn, user_text, history)

    def run_turn(
        self,
        *,
        audio: AudioChunk | None = None,
        text: str | None = None,
        history: Sequence[ChatMessage] = (),
        planner: Planner | None = None,
    ) -> Iterator[Transcript | ReplyChunk | SpeechChunk | VideoFrame | TurnResult]:
        """Stream one turn (see `services.turn.orchestrator.run_turn`)."""
        return drive(
            run_turn(
                self.stages, self.turn, audio=audio, text=text, history=history, planner=planner
            )
        )
