"""A fake LLM for tests and load tests of the serving layer (not a model).

It streams a configured reply word by word with a configurable time-to-first-token and
per-token delay, and can fail on purpose, so queueing and timeouts can be exercised without
a real model.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence

from pydantic import Field

from services.backend import BackendError, BackendOptions, Capabilities
from services.llm.base import LLMBackend
from services.types import ChatMessage


class FakeLLMOptions(BackendOptions):
    reply: str = Field(
        "Thanks for asking. I am the avatar of this cluster. Ask me anything else.",
        min_length=1,
        max_length=4000,
        description="Text streamed back for every request",
    )
    ttft_s: float = Field(0.0, ge=0, le=60, description="Delay before the first token")
    per_token_s: float = Field(0.0, ge=0, le=5, description="Delay between tokens")
    failure_rate: float = Field(0.0, ge=0, le=1, description="Share of requests that fail")
    seed: int = Field(0, ge=0, description="Seed for the failure draw")


class FakeLLM(LLMBackend):
    """Streams `options.reply` word by word (test/load-test backend)."""

    name = "fake"
    Options = FakeLLMOptions
    capabilities = Capabilities(streaming=True)

    def _load(self) -> None:
        self._random = random.Random(self.options.seed)

    def _stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, temperature: float
    ) -> Iterator[str]:
        with self._lock:
            failed = self._random.random() < self.options.failure_rate
        time.sleep(self.options.ttft_s)
        if failed:
            raise BackendError("fake LLM failure (failure_rate)")
        for i, word in enumerate(self.options.reply.split(" ")[:max_tokens]):
            if i:
                time.sleep(self.options.per_token_s)
            yield word if i == 0 else " " + word
