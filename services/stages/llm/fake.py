"""A fake LLM for tests and load tests of the serving layer (not a model).

It streams a configured reply word by word with a configurable time-to-first-token and
per-token delay, and can fail on purpose, so queueing and timeouts can be exercised without
a real model.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from pydantic import Field

from services.core.backend import Capabilities
from services.core.types import ChatMessage
from services.stages.fake_options import FakeOptions, FaultInjector
from services.stages.llm.base import LLMBackend


class FakeLLMOptions(FakeOptions):
    """Knobs of the fake LLM (failure knobs come from `FakeOptions`)."""

    reply: str = Field(
        "Thanks for asking. I am the avatar of this cluster. Ask me anything else.",
        min_length=1,
        max_length=4000,
        description="Text streamed back for every request",
    )
    ttft_s: float = Field(0.0, ge=0, le=60, description="Delay before the first token")
    per_token_s: float = Field(0.0, ge=0, le=5, description="Delay between tokens")


class FakeLLM(LLMBackend):
    """Streams `options.reply` word by word (test/load-test backend)."""

    name = "fake"
    Options = FakeLLMOptions
    capabilities = Capabilities(streaming=True)
    options: FakeLLMOptions

    def _load(self) -> None:
        # Built per load, not per instance: a reloaded fake restarts its failure sequence.
        self._faults = FaultInjector(self.options, "fake LLM failure (failure_rate)")

    def _stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, temperature: float
    ) -> Iterator[str]:
        self._faults.call(self.options.ttft_s)
        for i, word in enumerate(self.options.reply.split(" ")[:max_tokens]):
            if i:
                time.sleep(self.options.per_token_s)
            yield word if i == 0 else " " + word
