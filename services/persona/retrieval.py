"""Retrieval for one persona: which of the person's statements answers a turn, if any.

`Retriever.retrieve(text, history)` embeds the turn (with the previous question when the turn
is too short to carry a topic of its own) and ranks the statements by a *hybrid* score: the
cosine similarity of the best statement view (meaning) plus `lexical_weight` times the share of
the question's content words the statement contains (`lexical.LexicalIndex.coverage`, IDF
weighted over the pack's own statements).

`Retriever.answer(text, found)` decides whether the best statements answer it, in three checks
that each produce the no-answer reason:

1. `low_score`: the best hybrid score is below the pack's `min_score`;
2. `uncovered:<name>`: the question names a person, place or number (Japan, 2015, Idris) that no
   statement good enough to answer names; a statement that never names Japan does not answer a
   question about Japan, however close its vector is;
3. `unsupported:<words>`: (semantic embedders only) the question's words that the chosen
   statement does not contain are removed and the question is embedded again; if the statement
   is no less similar to the question without them, those words (the "hobby" of "What is
   Idris's favourite hobby?") were not what the statement matched: it answers another question.
   The test is relative to the question and statement at hand, so it needs no per-pack scale.
   Off unless the pack sets `support_margin`: on the dev questions it declined about as many
   answerable questions as unanswerable ones, and it costs a second embedding per turn.

In quote mode the twin speaks the chosen statement verbatim; for a question that asks two things
a second statement is joined, also verbatim, only when it is nearly as relevant and covers the
part of the question the first leaves out (it is then the second source in generate mode too).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from services.core.types import ChatMessage, Source
from services.persona import guardrails
from services.persona.corpus import Statement
from services.persona.embedder import Embedder
from services.persona.index import StatementIndex
from services.persona.lexical import STOP_WORDS, LexicalIndex, normal, stem, words
from services.persona.pack import PersonaPack

# Where a turn that asks two things splits: "and", "also", ";" or a second question.
_PARTS = re.compile(r"\band\b|\balso\b|;|\?\s+(?=\S)", re.IGNORECASE)


@dataclass(frozen=True)
class Found:
    """What a search returned: the embedded query, the hits (best first) and its cost.

    Attributes:
        query: The embedded (rewritten) retrieval text.
        hits: Top-k statements, best first; `score` is the hybrid score.
        retrieval_ms: Embedding + search time.
        text: The retrieval text (the turn, with the previous question for a short follow-up),
            after the pack's term rewrite.
        rows: Index rows of `hits`.
        dense: Cosine similarity (best view) of each hit.
        coverage: Lexical coverage of each hit.
    """

    query: np.ndarray
    hits: tuple[Source, ...]
    retrieval_ms: float
    text: str = ""
    rows: tuple[int, ...] = ()
    dense: tuple[float, ...] = ()
    coverage: tuple[float, ...] = ()

    @property
    def best(self) -> float:
        """Best cosine similarity (the scale the guard compares its examples on)."""
        if self.dense:
            return max(self.dense)
        return self.hits[0].score if self.hits else 0.0


@dataclass(frozen=True)
class Answer:
    """The retrieval decision: `sources` to ground the reply (empty = no answer), the quote to
    speak in quote mode, and why there is no answer when there is none."""

    sources: tuple[Source, ...]
    quote: str | None = None
    reason: str | None = None


def own_names(pack: PersonaPack) -> list[str]:
    """Names every statement of the pack implicitly carries: the person's and their company's."""
    config = pack.config
    capitalised = [w for w in re.findall(r"[A-Za-z][\w'-]*", config.role) if w[0].isupper()]
    return [config.display_name, config.name, *config.retrieval.generic_terms, *capitalised]


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
        self.lexical = LexicalIndex(
            [_rewritten(s, rewrite) for s in index.statements], own_names(pack)
        )

    # -- search ------------------------------------------------------------------------------

    def retrieve(self, text: str, history: Sequence[ChatMessage] = ()) -> Found:
        started = time.perf_counter()
        query_text = self._rewrite(self.query_text(text, history))
        query = self.embedder.embed_one(query_text)
        hits: list[Source] = []
        rows: list[int] = []
        dense_out: list[float] = []
        coverage_out: list[float] = []
        if len(self.index):
            dense = self.index.scores(query)
            coverage = self.lexical.coverage(query_text)
            hybrid = dense + self.settings.lexical_weight * coverage
            hybrid += self.settings.answer_type_weight * self.lexical.answer_type(query_text)
            k = min(self.settings.top_k, len(hybrid))
            top = np.argpartition(-hybrid, k - 1)[:k]
            top = top[np.argsort(-hybrid[top], kind="stable")]
            for row in top:
                hits.append(_source(self.index.statements[row], float(hybrid[row])))
                rows.append(int(row))
                dense_out.append(float(dense[row]))
                coverage_out.append(float(coverage[row]))
        return Found(
            query,
            tuple(hits),
            (time.perf_counter() - started) * 1000.0,
            text=query_text,
            rows=tuple(rows),
            dense=tuple(dense_out),
            coverage=tuple(coverage_out),
        )

    # -- decision ----------------------------------------------------------------------------

    def answer(self, text: str, found: Found) -> Answer:
        """Whether the statements found answer `text`, and what to quote (see module doc)."""
        settings = self.settings
        best = found.hits[0].score if found.hits else 0.0
        if best < settings.min_score:
            return Answer((), reason=f"low_score:{best:.2f}")
        query_text = found.text or self._rewrite(text)
        rows = found.rows or tuple(range(len(found.hits)))
        eligible = [i for i, hit in enumerate(found.hits) if hit.score >= settings.min_score]

        chosen = eligible[0]
        if settings.check_entities and found.rows:
            entities = self.lexical.entities(query_text)
            covering = [i for i in eligible if not self.lexical.missing(entities, [rows[i]])]
            if not covering:
                missing = self.lexical.missing(entities, [rows[eligible[0]]])
                return Answer((), reason=f"uncovered:{','.join(missing)}")
            chosen = covering[0]

        partner = self._partner(query_text, found, chosen) if found.rows else None
        if found.rows and self.embedder.semantic and settings.support_margin is not None:
            unsupported = self._unsupported(query_text, found, chosen, partner)
            if unsupported:
                return Answer((), reason=f"unsupported:{','.join(unsupported)}")

        lead = [chosen] if partner is None else [chosen, partner]
        sources = tuple(found.hits[i] for i in lead) + tuple(
            hit for i, hit in enumerate(found.hits) if i not in lead
        )
        if settings.answer_mode != "quote":
            return Answer(sources)
        return Answer(sources, quote=" ".join(found.hits[i].text for i in lead))

    def _unsupported(
        self, query_text: str, found: Found, chosen: int, partner: int | None
    ) -> list[str]:
        """Question words the chosen statement neither contains nor is close to in meaning.

        Embeds the question without the words statement `chosen` (and its `partner`, when two
        are joined) lacks; when the statement is at least as similar to that shortened question
        (minus `support_margin`), the removed words did not count towards the match, so the
        statement does not speak to them.
        """
        row = found.rows[chosen]
        missing = set(self.lexical.uncovered(query_text, row))
        if partner is not None:
            missing &= set(self.lexical.uncovered(query_text, found.rows[partner]))
        if not missing:
            return []
        shortened = _without(query_text, missing)
        if not shortened.strip(" ?.!"):
            return []
        vector = self.embedder.embed_one(shortened)
        without = float(self.index.scores(vector)[row])
        if found.dense[chosen] - without < self.settings.support_margin:
            return sorted(missing)
        return []

    def _partner(self, query_text: str, found: Found, chosen: int) -> int | None:
        """A second statement to quote after the first, or None.

        Only for a question that asks two things ("... and ...", two questions): the part the
        first statement leaves (at least half its word weight) uncovered must be at least half
        covered by a statement that clears `min_score` within `join_margin` of the first.
        """
        settings = self.settings
        if settings.max_quote_statements < 2:
            return None
        parts = [p for p in _PARTS.split(query_text) if self.lexical.query_terms(p)]
        if len(parts) < 2:
            return None
        first = found.hits[chosen].score
        for part in parts:
            terms = self.lexical.query_terms(part)
            weights = {t: self.lexical.idf(t) for t in terms}
            total = sum(weights.values())
            lacking = set(self.lexical.uncovered(part, found.rows[chosen]))
            if sum(weights[t] for t in lacking) < total / 2:
                continue
            for i, hit in enumerate(found.hits):
                if i == chosen or hit.score < max(settings.min_score, first - settings.join_margin):
                    continue
                adds = lacking - set(self.lexical.uncovered(part, found.rows[i]))
                if sum(weights[t] for t in adds) >= total / 2:
                    return i
        return None

    @staticmethod
    def query_text(text: str, history: Sequence[ChatMessage]) -> str:
        # "Why?" or "and then?" carry no topic of their own: retrieve with the previous question.
        if guardrails.word_count(text) < 4:
            for message in reversed(history):
                if message.role == "user":
                    return f"{message.content} {text}"
        return text


def _rewritten(statement: Statement, rewrite: Callable[[str], str]) -> Statement:
    """The statement as the embedder sees it (the pack's generic terms replaced)."""
    return Statement(
        statement.id,
        statement.source,
        rewrite(statement.text),
        rewrite(statement.section) if statement.section else None,
        rewrite(statement.title) if statement.title else None,
    )


def _source(statement: Statement, score: float) -> Source:
    return Source(
        id=statement.id,
        source=statement.source,
        text=statement.text,
        score=score,
        title=statement.title,
    )


def _without(text: str, drop: set[str]) -> str:
    """`text` with the words whose content stem is in `drop` removed."""
    kept = []
    for word in words(text):
        lowered = normal(word)
        if lowered not in STOP_WORDS and stem(lowered.strip("'")) in drop:
            continue
        kept.append(word)
    return " ".join(kept) + ("?" if text.rstrip().endswith("?") else "")
