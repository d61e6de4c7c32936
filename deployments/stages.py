"""The four stage deployments: thin shims that build a `services/` backend from config.

Each replica builds and loads its backend once, runs blocking model calls in a worker thread
(so the replica keeps answering health checks and other requests), records the stage and
backend metrics, and reports health to Serve. The class is decorated with Serve options by
`deployments.app`, from config.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from deployments.metrics import ray_telemetry
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
    """Shared lifecycle: build + load the backend, record metrics, answer health checks."""

    stage = ""

    def __init__(self, stage_config: dict[str, Any]) -> None:
        config = StageConfig(stage=self.stage, **stage_config)
        self.backend_name = config.backend
        self.backend = create_backend(self.stage, config.backend, config.options)
        self.backend.load()
        self.telemetry = ray_telemetry()
        self._in_flight = [0]
        # A Ray gauge vanishes ~25 s after its last set(): re-set the in-flight gauge while the
        # replica idles, or dashboards read "no data" instead of 0.
        threading.Thread(target=self._report_in_flight, daemon=True).start()

    def _report_in_flight(self) -> None:
        while True:
            time.sleep(5)
            # A metrics hiccup must not kill the replica.
            with contextlib.suppress(Exception):
                self.telemetry.set(
                    "avatar_stage_in_flight",
                    self._in_flight[0],
                    stage=self.stage,
                    backend=self.backend_name,
                )

    def call(self):
        return self.telemetry.stage_call(self.stage, self.backend_name, self._in_flight)

    def figure(self, name: str, value: float) -> None:
        self.telemetry.observe(name, value, backend=self.backend_name)

    async def health(self) -> dict[str, Any]:
        return {"stage": self.stage, **self.backend.health()}

    def check_health(self) -> None:
        # Serve restarts a replica whose check raises.
        if not self.backend.loaded:
            raise RuntimeError(f"{self.stage} backend is not loaded")


class ASRDeployment(StageDeployment):
    stage = "asr"

    async def transcribe(self, audio: AudioChunk) -> Transcript:
        with self.call():
            start = time.perf_counter()
            transcript = await asyncio.to_thread(self.backend.transcribe, audio)
            if audio.duration_s:
                self.figure("avatar_asr_rtf", (time.perf_counter() - start) / audio.duration_s)
            return transcript


class LLMDeployment(StageDeployment):
    stage = "llm"

    async def sentences(
        self, messages: Sequence[ChatMessage], turn: TurnSettings
    ) -> AsyncIterator[ReplyChunk]:
        # Only whole sentences cross the network: one message per sentence, not per token.
        with self.call():
            start, tokens = time.perf_counter(), 0
            chunks = iterate_in_thread(lambda: llm_sentences(self.backend, messages, turn))
            async for chunk in chunks:
                if chunk.first_token_s is not None:
                    self.figure("avatar_llm_time_to_first_token_seconds", chunk.first_token_s)
                tokens += chunk.tokens
                yield chunk
            elapsed = time.perf_counter() - start
            self.telemetry.inc("avatar_llm_tokens", tokens, backend=self.backend_name)
            if tokens and elapsed > 0:
                self.figure("avatar_llm_tokens_per_second", tokens / elapsed)


class TTSDeployment(StageDeployment):
    stage = "tts"

    async def synthesize(self, text: str, voice: str | None, speed: float) -> SpeechChunk:
        with self.call():
            start = time.perf_counter()
            speech = await asyncio.to_thread(
                self.backend.synthesize, text, voice=voice, speed=speed
            )
            if speech.duration_s:
                self.figure("avatar_tts_rtf", (time.perf_counter() - start) / speech.duration_s)
            return speech


class RenderDeployment(StageDeployment):
    stage = "render"

    async def render(
        self, speech: SpeechChunk, look: AvatarLook | None
    ) -> AsyncIterator[VideoFrame]:
        with self.call():
            start, frames = time.perf_counter(), 0
            encoded = iterate_in_thread(
                lambda: map(to_jpeg, self.backend.render(speech, look=look))
            )
            async for frame in encoded:
                frames += 1
                yield frame
            elapsed = time.perf_counter() - start
            if frames and elapsed > 0:
                self.figure("avatar_render_fps", frames / elapsed)


STAGE_CLASSES = {
    "asr": ASRDeployment,
    "llm": LLMDeployment,
    "tts": TTSDeployment,
    "render": RenderDeployment,
}
