"""The persona's guard: what the twin must not answer from the corpus, decided before retrieval
(by wording) and right after it (by meaning).

`Guard.by_wording(text)` catches unsafe requests, "are you real?" questions and the pack's
avoided topics by pattern (`guardrails`). `Guard.by_meaning(query, best_corpus_score)` compares
the embedded turn with example questions, always as a nearest-neighbour MARGIN rather than one
absolute cut (MiniLM puts "What's the name of your co-founder?" at 0.8 from "Tell me where your
co-founder lives"; only a benign neighbour that is closer still tells them apart):

- unsafe request types (`services/persona/safety/unsafe_requests.yaml`, shipped with the
  project) against its benign look-alikes. Self-harm is checked first, with a lower threshold
  (a missed one is the worst error) and only ever the supportive `SELF_HARM_REPLY`; then the
  nearest other category, refused when at least `UNSAFE_SIMILARITY` and `UNSAFE_MARGIN` ahead of
  the nearest benign example, and, below `UNSAFE_STRONG`, also closer than anything the person
  said (a question about her work that shares words with an unsafe type is answered);
- disclosure prompts against disclosure look-alikes ("is your product powered by AI?"), and
  ahead of the corpus;
- the pack's avoided-topic examples plus the curated prototypes of a topic of the same name (at
  `topic_similarity`, or from `MEANING_FLOOR` when ahead of the corpus by `MEANING_MARGIN`).

Every verdict says why ("unsafe:self_harm:similar:0.58"). Thresholds are MiniLM cosine
similarities chosen on tuning data only (the curated examples and the `dev` split of
loadtests/persona_probes.yaml). With a non-semantic embedder (hashing) only the wording checks
run. `filter_sentence` post-filters generated sentences (a twin never claims to be human).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.persona import guardrails
from services.persona.embedder import Embedder
from services.persona.pack import PersonaPack
from services.persona.safety import load_unsafe_requests

SELF_HARM = "self_harm"
# Self-harm: from this similarity, and this far ahead of the nearest benign example; below
# `SELF_HARM_STRONG` also this far ahead of the corpus ("tell me about the day you lost your
# notes" is a sad story the person told, near 0.45).
SELF_HARM_SIMILARITY = 0.45
SELF_HARM_MARGIN = 0.10
SELF_HARM_STRONG = 0.55
SELF_HARM_CORPUS_MARGIN = 0.10
# Other unsafe types: from this similarity and margin over the nearest benign example ...
UNSAFE_SIMILARITY = 0.45
UNSAFE_MARGIN = 0.05
# ... and, below this, only when closer than the best corpus statement.
UNSAFE_STRONG = 0.60
# Weakly similar turns the corpus has nothing on (dense best below `UNSAFE_WEAK_CORPUS`, so not
# a question about the person's work) are refused when clearly nearer an unsafe type than any
# benign one (harassment and threats phrased unlike any example sit near 0.4).
UNSAFE_WEAK = 0.40
UNSAFE_WEAK_MARGIN = 0.12
UNSAFE_WEAK_CORPUS = 0.35
# Disclosure by meaning: similarity, and margin over the disclosure look-alikes.
DISCLOSURE_SIMILARITY = 0.60
DISCLOSURE_MARGIN = 0.05
# Avoided-topic examples: from here, refused when ahead of the corpus by the margin.
MEANING_FLOOR = 0.50
MEANING_MARGIN = 0.15

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
    "Is a computer writing these replies?",
    "Are you the genuine person or a fake?",
    "Was this reply written by an AI?",
    "Is this conversation with a machine?",
    "Did {name} type this answer herself?",
    "Is someone real reading my messages?",
    "Are these replies produced by software?",
)
# Questions about the person's work that look like the ones above: "real", "AI", "actually".
DISCLOSURE_LOOKALIKES = (
    "Is your product powered by AI?",
    "Does your software use artificial intelligence?",
    "What do you think about AI at work?",
    "Is the sync real-time?",
    "Are you actually profitable?",
    "Do you have a real office?",
    "Is the demo real?",
    "Are your customers real companies?",
    "Did {name} really work in the field?",
    "Is {name} still running the company?",
    "Did you really do that yourself?",
    "Are you working remotely?",
)

# Curated examples embedded once per embedder (they are the same for every pack).
_CURATED: weakref.WeakKeyDictionary[Embedder, tuple[np.ndarray, np.ndarray]] = (
    weakref.WeakKeyDictionary()
)


def _curated_vectors(embedder: Embedder) -> tuple[np.ndarray, np.ndarray]:
    cached = _CURATED.get(embedder)
    if cached is None:
        data = load_unsafe_requests()
        cached = (embedder.embed(list(data.examples)), embedder.embed(list(data.benign)))
        _CURATED[embedder] = cached
    return cached


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


def _best(matrix: np.ndarray | None, query: np.ndarray) -> float:
    return float(np.max(matrix @ query)) if matrix is not None and len(matrix) else 0.0


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
        semantic = embedder.semantic
        curated = load_unsafe_requests()

        def embed(texts) -> np.ndarray | None:
            texts = [rewrite(t.format(name=config.name)) for t in texts]
            return embedder.embed(texts) if texts and semantic else None

        self._topics = [
            _Topic(
                name=t.name,
                reply=t.reply or config.replies.refusal,
                pattern=guardrails.keyword_pattern(t.keywords),
                examples=embed([*t.examples, *curated.topics.get(t.name, ())]),
            )
            for t in config.topics_to_avoid
        ]
        self._disclosure_examples = embed(DISCLOSURE_EXAMPLES)
        self._disclosure_lookalikes = embed(DISCLOSURE_LOOKALIKES)
        self._unsafe_categories = np.array(curated.categories)
        self._unsafe, self._benign = _curated_vectors(embedder) if semantic else (None, None)

    def _unsafe_reply(self, category: str) -> str:
        return guardrails.SELF_HARM_REPLY if category == SELF_HARM else self.replies.unsafe

    def by_wording(self, text: str) -> Verdict | None:
        """Unsafe, disclosure and avoided-topic checks on the words of the turn."""
        category = guardrails.unsafe_category(text)
        if category is not None:
            return Verdict("refusal", self._unsafe_reply(category), f"unsafe:{category}")
        norm = guardrails.normalise(text)
        if self._disclosure_re.search(norm):
            return Verdict("disclosure", self.replies.disclosure, "disclosure:pattern")
        for topic in self._topics:
            if topic.pattern is not None and topic.pattern.search(norm):
                return Verdict("refusal", topic.reply, f"topic:{topic.name}")
        return None

    def unsafe_scores(self, query: np.ndarray) -> tuple[dict[str, float], float]:
        """Nearest unsafe example per category, and the nearest benign look-alike."""
        if self._unsafe is None or not len(self._unsafe):
            return {}, 0.0
        scores = self._unsafe @ query
        per_category: dict[str, float] = {}
        for category, score in zip(self._unsafe_categories, scores, strict=True):
            per_category[category] = max(per_category.get(category, -1.0), float(score))
        return per_category, _best(self._benign, query)

    def unsafe_by_meaning(
        self, query: np.ndarray, best_corpus_score: float
    ) -> tuple[Verdict, float] | None:
        """The unsafe check alone (self-harm first, then the nearest other category): the
        verdict and the similarity that decided it."""
        per_category, benign = self.unsafe_scores(query)
        if not per_category:
            return None
        self_harm = per_category.pop(SELF_HARM, 0.0)
        # Before the others: "hide the marks of a blade" is also near violence, and the person
        # must get the supportive reply, not the persona's refusal.
        if (
            self_harm >= SELF_HARM_SIMILARITY
            and self_harm - benign >= SELF_HARM_MARGIN
            and (
                self_harm >= SELF_HARM_STRONG
                or self_harm >= best_corpus_score + SELF_HARM_CORPUS_MARGIN
            )
        ):
            reason = f"unsafe:{SELF_HARM}:similar:{self_harm:.2f}"
            return Verdict("refusal", guardrails.SELF_HARM_REPLY, reason), self_harm
        if not per_category:
            return None
        category = max(per_category, key=per_category.__getitem__)
        score = per_category[category]
        margin = score - benign
        weak = (
            score >= UNSAFE_WEAK
            and margin >= UNSAFE_WEAK_MARGIN
            and best_corpus_score < UNSAFE_WEAK_CORPUS
        )
        if not weak:
            if score < UNSAFE_SIMILARITY or margin < UNSAFE_MARGIN:
                return None
            if score < UNSAFE_STRONG and score <= best_corpus_score:
                return None
        reason = f"unsafe:{category}:similar:{score:.2f}"
        return Verdict("refusal", self.replies.unsafe, reason), score

    def _example_wins(self, score: float, benign: float, best_corpus_score: float) -> bool:
        # Also nearer than every curated benign question: "are you profitable?" is close to
        # "how much revenue did you make?" but closer still to "is the company profitable?".
        if score <= benign:
            return False
        if score >= self.topic_similarity:
            return score > best_corpus_score
        return score >= MEANING_FLOOR and score >= best_corpus_score + MEANING_MARGIN

    def topic_by_meaning(
        self, query: np.ndarray, best_corpus_score: float
    ) -> tuple[Verdict, float] | None:
        """The nearest avoided topic whose examples beat the corpus and the benign questions."""
        benign = _best(self._benign, query)
        best: tuple[float, _Topic] | None = None
        for topic in self._topics:
            score = _best(topic.examples, query)
            if self._example_wins(score, benign, best_corpus_score) and (
                best is None or score > best[0]
            ):
                best = (score, topic)
        if best is None:
            return None
        score, topic = best
        reason = f"topic:{topic.name}:similar:{score:.2f}"
        return Verdict("refusal", topic.reply, reason), score

    def by_meaning(self, query: np.ndarray, best_corpus_score: float) -> Verdict | None:
        """Unsafe, disclosure and avoided-topic checks by similarity to example questions."""
        unsafe = self.unsafe_by_meaning(query, best_corpus_score)
        topic = self.topic_by_meaning(query, best_corpus_score)
        if unsafe is not None:
            verdict, score = unsafe
            # The person's own declined topic, when it is the closer match, gets its own reply
            # ("how much do you earn?" is her private money, not someone's private data).
            own_topic = topic is not None and topic[1] >= score
            if own_topic and not verdict.reason.startswith(f"unsafe:{SELF_HARM}"):
                return topic[0]
            return verdict
        if self._disclosure_examples is not None:
            score = _best(self._disclosure_examples, query)
            lookalike = _best(self._disclosure_lookalikes, query)
            if (
                score >= DISCLOSURE_SIMILARITY
                and score - lookalike >= DISCLOSURE_MARGIN
                and score > best_corpus_score
            ):
                return Verdict(
                    "disclosure", self.replies.disclosure, f"disclosure:similar:{score:.2f}"
                )
        return topic[0] if topic is not None else None

    def filter_sentence(self, sentence: str) -> str:
        """Post-filter one generated sentence: "" when it claims to be human (or is unsafe)."""
        return self._human_filter(sentence)
