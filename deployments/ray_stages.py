"""The `Stages` protocol over Ray Serve handles: how the router calls the four deployments.

Ray cannot pass a streaming generator from one deployment into another, so the router drives
every stream itself and forwards sentence by sentence. Every call is cancelled in its replica
when the turn is (barge-in, a client gone): a queued call is dropped there, a stream stops.
"""

import asyncio
from collections.abc import Sequence

from ray.serve.handle import DeploymentHandle

from services.core.config import TurnSettings
from services.core.types import AudioChunk, AvatarLook, ChatMessage, SpeechChunk, Transcript


class RayStages:
    """The `Stages` protocol over Serve handles."""

    def __init__(self, asr, llm, tts, render) -> None:
        self.asr: DeploymentHandle = asr
        self.llm: DeploymentHandle = llm
        self.tts: DeploymentHandle = tts
        self.renderer: DeploymentHandle = render

    async def transcribe(self, audio: AudioChunk) -> Transcript:
        return await _cancellable(self.asr.transcribe.remote(audio))

    async def sentences(self, messages: Sequence[ChatMessage], turn: TurnSettings):
        stream = self.llm.options(stream=True).sentences.remote(tuple(messages), turn)
        try:
            async for chunk in stream:
                yield chunk
        finally:
            stream.cancel()  # the turn ended early: stop generating

    async def synthesize(self, text: str, voice: str | None, speed: float) -> SpeechChunk:
        return await _cancellable(self.tts.synthesize.remote(text, voice, speed))

    async def render(self, speech: SpeechChunk, look: AvatarLook | None, video: str = "jpeg"):
        stream = self.renderer.options(stream=True).render.remote(speech, look, video)
        try:
            async for frame in stream:
                yield frame
        finally:
            stream.cancel()


async def _cancellable(response):
    """Await a Serve call; if the turn is cancelled (barge-in), cancel it in its replica too:
    a queued call is dropped there instead of running for a turn nobody listens to."""
    try:
        return await response
    except asyncio.CancelledError:
        response.cancel()
        raise
