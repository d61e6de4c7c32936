"""The persona's guard: what the twin must not answer from the corpus, decided before retrieval
(by wording) and right after it (by meaning).

`Guard.by_wording(text)` catches unsafe requests, "are you real?" questions and the pack's
avoided topics by pattern; `Guard.by_meaning(query, best_corpus_score)` compares the embedded
turn with example questions (disclosure prompts, avoided-topic examples) and wins only where an
example is closer than anything the person said, so a real question about their work that
shares words with an avoided topic is still answered. `filter_sentence` post-filters generated
sentences (a twin never claims to be human).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.persona import guardrails
from services.persona.embedder import Embedder
from services.persona.pack import PersonaPack

# Prototype "who am I talking to" questions for the meaning-based disclosure check; the regexes
# in `guardrails` are the primary detector, these catch phrasings they miss.
DISCLOSURE_EXAMPLES = (
    "Are you a real person?",
    "Am I talking to a bot?",
    "Is this really {name}?",
    "Are you an AI?",
    "Is a human answering me right now?",
    "Is this a recording or is it live?",
    "Are you actually {name} or a computer?",
    "Is there a person on the other side of this conversation?",
)


@dataclass(frozen=True)
class Verdict:
    """A guarded path: the plan kind, the canned reply, and why (for the audit log)."""

    kind: str
    reply: str
    reason: str


@dataclass
class _Topic:
    """An avoided topic compiled for matching: keyword regex and example embeddings."""

    name: str
    reply: str
    pattern: Any
    examples: np.ndarray | None = field(default=None)


class Guard:
    """Guardrails of one persona pack.

    Args:
        pack: The persona pack (names, replies, topics to avoid).
        embedder: The embedder of the pack's index (for the meaning-based checks).
        rewrite: The pack's term rewriter, applied to examples as to user turns.
    """

    def __init__(self, pack: PersonaPack, embedder: Embedder, rewrite) -> None:
        config = pack.config
        self.replies = config.replies
        self.topic_similarity = config.retrieval.topic_similarity
        names = [config.display_name, config.name]
        self._disclosure_re = guardrails.disclosure_pattern(names)
        self._human_filter = guardrails.HumanClaimFilter(names)
        self._topics = [
            _Topic(
                name=t.name,
                reply=t.reply or config.replies.refusal,
                pattern=guardrails.keyword_pattern(t.keywords),
                examples=(
                    embedder.embed([rewrite(x) for x in t.examples])
                    if t.examples and embedder.semantic
                    else None
                ),
            )
            for t in config.topics_to_avoid
        ]
        examples = [rewrite(q.format(name=config.name)) for q in DISCLOSURE_EXAMPLES]
        self._disclosure_examples = embedder.embed(examples) if embedder.semantic else None

    def by_wording(self, text: str) -> Verdict | None:
        """Unsafe, disclosure and avoided-topic checks on the words of the turn."""
        category = guardrails.unsafe_category(text)
        if category is not None:
            reply = guardrails.SELF_HARM_REPLY if category == "self_harm" else self.replies.unsafe
            return Verdict("refusal", reply, f"unsafe:{category}")
        norm = guardrails.normalise(text)
        if self._disclosure_re.search(norm):
            return Verdict("disclosure", self.replies.disclosure, "disclosure:pattern")
        for topic in self._topics:
            if topic.pattern is not None and topic.pattern.search(norm):
                return Verdict("refusal", topic.reply, f"topic:{topic.name}")
        return None

    def by_meaning(self, query: np.ndarray, best_corpus_score: float) -> Verdict | None:
        """Disclosure and avoided-topic checks by similarity to example questions."""
        threshold = self.topic_similarity
        if self._disclosure_examples is not None:
            score = float(np.max(self._disclosure_examples @ query))
            if score >= threshold and score > best_corpus_score:
                return Verdict(
                    "disclosure", self.replies.disclosure, f"disclosure:similar:{score:.2f}"
                )
        for topic in self._topics:
            if topic.examples is None:
                continue
            score = float(np.max(topic.examples @ query))
            if score >= threshold and score > best_corpus_score:
                return Verdict("refusal", topic.reply, f"topic:{topic.name}:similar:{score:.2f}")
        return None

    def filter_sentence(self, sentence: str) -> str:
        """Post-filter one generated sentence: "" when it claims to be human (or is unsafe)."""
        return self._human_filter(sentence)
