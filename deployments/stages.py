"""The four stage deployments: thin shims that build a `services/` backend from config.

Each replica builds and loads its backend once, runs blocking model calls in a worker thread
(so the replica keeps answering health checks and other requests), and reports health to
Serve. The class is decorated with Serve options by `deployments.app`, from config.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from services.config import StageConfig, TurnSettings
from services.orchestrator import llm_sentences
from services.registry import create_backend
from services.render.jpeg import to_jpeg
from services.streams import iterate_in_thread
from services.types import (
    AudioChunk,
    AvatarLook,
    ChatMessage,
    ReplyChunk,
    SpeechChunk,
    Transcript,
    VideoFrame,
)


class StageDeployment:
    """Shared lifecycle: build + load the backend, answer health checks."""

    stage = ""

    def __init__(self, stage_config: dict[str, Any]) -> None:
        config = StageConfig(stage=self.stage, **stage_config)
        self.backend = create_backend(self.stage, config.backend, config.options)
        self.backend.load()

    async def health(self) -> dict[str, Any]:
        return {"stage": self.stage, **self.backend.health()}

    def check_health(self) -> None:
        # Serve restarts a replica whose check raises.
        if not self.backend.loaded:
            raise RuntimeError(f"{self.stage} backend is not loaded")


class ASRDeployment(StageDeployment):
    stage = "asr"

    async def transcribe(self, audio: AudioChunk) -> Transcript:
        return await asyncio.to_thread(self.backend.transcribe, audio)


class LLMDeployment(StageDeployment):
    stage = "llm"

    async def sentences(
        self, messages: Sequence[ChatMessage], turn: TurnSettings
    ) -> AsyncIterator[ReplyChunk]:
        # Only whole sentences cross the network: one message per sentence, not per token.
        async for chunk in iterate_in_thread(lambda: llm_sentences(self.backend, messages, turn)):
            yield chunk


class TTSDeployment(StageDeployment):
    stage = "tts"

    async def synthesize(self, text: str, voice: str | None, speed: float) -> SpeechChunk:
        return await asyncio.to_thread(self.backend.synthesize, text, voice=voice, speed=speed)


class RenderDeployment(StageDeployment):
    stage = "render"

    async def render(
        self, speech: SpeechChunk, look: AvatarLook | None
    ) -> AsyncIterator[VideoFrame]:
        frames = iterate_in_thread(lambda: map(to_jpeg, self.backend.render(speech, look=look)))
        async for frame in frames:
            yield frame

    async def fps(self) -> float:
        return self.backend.fps


STAGE_CLASSES = {
    "asr": ASRDeployment,
    "llm": LLMDeployment,
    "tts": TTSDeployment,
    "render": RenderDeployment,
}
