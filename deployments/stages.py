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
from services.core.config import StageConfig, TurnSettings
from services.core.registry import create_backend
from services.core.streams import iterate_in_thread
from services.core.types import (
    AudioChunk,
    AvatarLook,
    ChatMessage,
    ReplyChunk,
    SpeechChunk,
    Transcript,
    VideoFrame,
)
from services.stages.render.h264 import encode_h264
from services.stages.render.jpeg import to_jpeg
from services.turn.orchestrator import llm_sentences


class StageDeployment:
    """Shared lifecycle: build + load the backend, record metrics, answer health checks."""

    stage = ""

    def __init__(self, config: StageConfig) -> None:
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

    async def in_thread(self, fn, *args, **kwargs) -> tuple[Any, float]:
        """Run a blocking backend call in a worker thread; returns (result, seconds taken)."""
        start = time.perf_counter()
        result = await asyncio.to_thread(fn, *args, **kwargs)
        return result, time.perf_counter() - start

    def real_time_factor(self, name: str, seconds: float, media_s: float) -> None:
        """Observe compute seconds per second of audio (skipped for empty media)."""
        if media_s:
            self.figure(name, seconds / media_s)

    async def health(self) -> dict[str, Any]:
        # in_flight: calls running or queued in this replica (0 once a cut turn's work is gone).
        return {"stage": self.stage, "in_flight": self._in_flight[0], **self.backend.health()}

    def check_health(self) -> None:
        # Serve restarts a replica whose check raises.
        if not self.backend.loaded:
            raise RuntimeError(f"{self.stage} backend is not loaded")


class ASRDeployment(StageDeployment):
    stage = "asr"

    async def transcribe(self, audio: AudioChunk) -> Transcript:
        with self.call():
            transcript, seconds = await self.in_thread(self.backend.transcribe, audio)
            self.real_time_factor("avatar_asr_rtf", seconds, audio.duration_s)
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
            speech, seconds = await self.in_thread(
                self.backend.synthesize, text, voice=voice, speed=speed
            )
            self.real_time_factor("avatar_tts_rtf", seconds, speech.duration_s)
            return speech


class RenderDeployment(StageDeployment):
    stage = "render"

    async def render(
        self, speech: SpeechChunk, look: AvatarLook | None, video: str = "jpeg"
    ) -> AsyncIterator[VideoFrame]:
        with self.call():
            start, frames = time.perf_counter(), 0
            fps = self.backend.fps

            def encode():
                rendered = self.backend.render(speech, look=look)
                if video == "h264":  # one stream per sentence, starting with a keyframe
                    return encode_h264(rendered, fps)
                return map(to_jpeg, rendered)

            encoded = iterate_in_thread(encode)
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
