"""Retrieval for one persona: which of the person's statements answers a turn, if any.

`Retriever.retrieve(text, history)` embeds the turn (with the previous question when the turn
is too short to carry a topic of its own) and searches the statement index;
`Retriever.answer(text, found)` decides whether the best statements answer it (else the twin
says it has nothing on that) and, in quote mode, which of the person's own words to speak.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from services.core.types import ChatMessage, Source
from services.persona import guardrails
from services.persona.embedder import Embedder
from services.persona.index import StatementIndex
from services.persona.pack import PersonaPack


@dataclass(frozen=True)
class Found:
    """What a search returned: the embedded query, the hits (best first) and its cost."""

    query: np.ndarray
    hits: tuple[Source, ...]
    retrieval_ms: float

    @property
    def best(self) -> float:
        return self.hits[0].score if self.hits else 0.0


@dataclass(frozen=True)
class Answer:
    """The retrieval decision: `sources` to ground the reply (empty = no answer), the quote to
    speak in quote mode, and why there is no answer when there is none."""

    sources: tuple[Source, ...]
    quote: str | None = None
    reason: str | None = None


class Retriever:
    """Statement retrieval and the answer/no-answer decision of one persona pack.

    Args:
        pack: The persona pack (its `retrieval` settings).
        index: The pack's statement index.
        embedder: The embedder that built `index`.
        rewrite: The pack's term rewriter, applied to queries as to statements.
    """

    def __init__(
        self,
        pack: PersonaPack,
        index: StatementIndex,
        embedder: Embedder,
        rewrite: Callable[[str], str],
    ) -> None:
        self.settings = pack.config.retrieval
        self.index, self.embedder, self._rewrite = index, embedder, rewrite

    def retrieve(self, text: str, history: Sequence[ChatMessage] = ()) -> Found:
        started = time.perf_counter()
        query = self.embedder.embed_one(self._rewrite(self.query_text(text, history)))
        hits = tuple(self.index.search(query, self.settings.top_k))
        return Found(query, hits, (time.perf_counter() - started) * 1000.0)

    def answer(self, text: str, found: Found) -> Answer:
        """Whether the statements found answer `text`, and what to quote."""
        if found.best < self.settings.min_score:
            return Answer((), reason=f"low_score:{found.best:.2f}")
        quote = found.hits[0].text if self.settings.answer_mode == "quote" else None
        return Answer(found.hits, quote=quote)

    @staticmethod
    def query_text(text: str, history: Sequence[ChatMessage]) -> str:
        # "Why?" or "and then?" carry no topic of their own: retrieve with the previous question.
        if guardrails.word_count(text) < 4:
            for message in reversed(history):
                if message.role == "user":
                    return f"{message.content} {text}"
        return text
