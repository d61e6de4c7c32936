"""The LLM interface: a chat conversation in, text pieces out as they are generated."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence

from services.backend import Backend
from services.types import ChatMessage


class LLMBackend(Backend):
    """Streaming chat completion.

    `stream` yields text pieces (tokens or groups of tokens) as soon as they exist; the caller
    turns them into sentences (`services.llm.sentences`). `max_tokens` is a hard bound.
    """

    @abstractmethod
    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
    ) -> Iterator[str]:
        """Yield the reply's text pieces in order."""
