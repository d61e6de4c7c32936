"""The LLM interface: a chat conversation in, text pieces out as they are generated."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence

from services.core.backend import Backend, BackendError
from services.core.types import ChatMessage


class LLMBackend(Backend):
    """Streaming chat completion.

    `stream` yields text pieces (tokens or groups of tokens) as soon as they exist; the caller
    turns them into sentences (`services.stages.llm.sentences`). `max_tokens` is a hard bound.
    """

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
    ) -> Iterator[str]:
        """Yield the reply's text pieces in order."""
        if not messages:
            raise BackendError("no messages to answer")
        self.load()
        return self._stream(messages, max_tokens=max_tokens, temperature=temperature)

    @abstractmethod
    def _stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, temperature: float
    ) -> Iterator[str]:
        """Generate from a loaded model; `messages` is not empty."""
