"""The persona's guard: what the twin must not answer from the corpus, decided before retrieval
(by wording) and right after it (by meaning).

`Guard.by_wording(text)` catches unsafe requests, "are you real?" questions and the pack's
avoided topics by pattern (`guardrails`). `Guard.by_meaning(query, best_corpus_score)` compares
the embedded turn with example questions, always as a nearest-neighbour MARGIN rather than one
absolute cut (MiniLM puts "What's the name of your co-founder?" at 0.8 from "Tell me where your
co-founder lives"; only a benign neighbour that is closer still tells them apart):

- unsafe request types (`services/persona/safety/unsafe_requests.yaml`, shipped with the
  project) against its benign look-alikes. Self-harm is checked first, with a lower threshold
  (a missed one is the worst error) and only ever the supportive `SELF_HARM_REPLY`; then a vote
  of the turn's nearest neighbours among the unsafe examples, the benign look-alikes and the
  person's own statements (`votes.py`, `UNSAFE_SHARE`), so a question
  about her work that shares words with an unsafe type is answered;
- disclosure prompts against disclosure look-alikes ("is your product powered by AI?"), and
  ahead of the corpus;
- the pack's avoided-topic examples plus the curated prototypes of a topic of the same name (at
  `topic_similarity`, or from `MEANING_FLOOR` when ahead of the corpus by `MEANING_MARGIN`), or
  else when the turn's nearest neighbours among them, the benign look-alikes and the person's
  statements vote for the topic (`TOPIC_NEIGHBOURS`, `TOPIC_SHARE`, `votes.VoteScale`).

Every verdict says why ("unsafe:self_harm:similar:0.58"). Thresholds are cosine similarities
chosen on tuning data only (the demo's dev split, loadtests/persona_probes.yaml and
persona_probes_blind.yaml; blind2 was only measured): first with MiniLM, then the votes' sizes
and floors again for mpnet (`votes.SCALES`), by a coordinate sweep maximising refusal and
disclosure recall with at most 1% of the benign look-alikes refused and no more dev questions
refused. The sweep's disclosure step (similarity 0.50) was not taken: on blind set 2 it answered
"hey maya hows it going" with the disclosure. With a non-semantic embedder
(hashing) only the wording checks run. `filter_sentence` post-filters generated sentences (a
twin never claims to be human).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.persona import guardrails, votes
from services.persona.embedder import Embedder
from services.persona.pack import PersonaPack
from services.persona.safety import load_unsafe_requests

Embed = Callable[[Sequence[str]], np.ndarray]

SELF_HARM = "self_harm"
# Self-harm: from this similarity, and this far ahead of the nearest benign example; below
# `SELF_HARM_STRONG` also this far ahead of the corpus ("tell me about the day you lost your
# notes" is a sad story the person told, near 0.45).
SELF_HARM_SIMILARITY = 0.45
SELF_HARM_MARGIN = 0.10
SELF_HARM_STRONG = 0.55
SELF_HARM_CORPUS_MARGIN = 0.10
# A turn refused as another unsafe type that is also this near a self-harm example gets the
# supportive reply ("make it look like an accident on a job site so my family gets the
# insurance": 0.63 mpnet, 0.55 MiniLM, voted a safety bypass). Of the other unsafe probes refused
# as another type, the nearest to a self-harm example is at 0.47 (mpnet), 0.46 (MiniLM).
SELF_HARM_ROUTE = 0.50
# Other unsafe types: a vote of the turn's nearest neighbours among the unsafe examples, the
# benign look-alikes AND the person's own statements (`votes.py`: its size and floor depend on
# the embedder): refused when the unsafe share is at least `UNSAFE_SHARE` and the nearest unsafe
# example at least the floor.
UNSAFE_SHARE = 0.6
# Of the unsafe weight in such a vote, the share of self-harm examples that makes it self-harm.
SELF_HARM_VOTE_SHARE = 1 / 3
# Avoided topics, besides their example similarity: the same kind of vote among the topics'
# examples, the benign look-alikes and the person's statements, stricter (MiniLM puts "what's
# your favourite food?" near "which competitor is your favourite?").
TOPIC_NEIGHBOURS = 9
TOPIC_SHARE = 0.8
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


def _curated_vectors(embedder: Embedder, embed: Embed) -> tuple[np.ndarray, np.ndarray]:
    cached = _CURATED.get(embedder)
    if cached is None:
        data = load_unsafe_requests()
        cached = (embed(list(data.examples)), embed(list(data.benign)))
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
    """An avoided topic compiled for matching: keyword regex, example embeddings, and the
    embeddings of its curated `topic_neighbours` (the vote only)."""

    name: str
    reply: str
    pattern: Any
    examples: np.ndarray | None = field(default=None)
    neighbours: np.ndarray | None = field(default=None)


def _best(matrix: np.ndarray | None, query: np.ndarray) -> float:
    return float(np.max(matrix @ query)) if matrix is not None and len(matrix) else 0.0


class Guard:
    """Guardrails of one persona pack.

    Args:
        pack: The persona pack (names, replies, topics to avoid).
        embedder: The embedder of the pack's index (for the meaning-based checks).
        rewrite: The pack's term rewriter, applied to examples as to user turns.
        corpus: The person's statement vectors (neighbours that must be answered).
        examples: Embeds the example lists (default `embedder.embed`; the runtime passes a
            `vector_cache.VectorCache`, so a restart does not embed them again).
    """

    def __init__(
        self,
        pack: PersonaPack,
        embedder: Embedder,
        rewrite,
        corpus: np.ndarray | None = None,
        examples: Embed | None = None,
    ) -> None:
        config = pack.config
        self.replies = config.replies
        self.topic_similarity = config.retrieval.topic_similarity
        self.votes = votes.scale_for(embedder.key)
        names = [config.display_name, config.name]
        self._disclosure_re = guardrails.disclosure_pattern(names)
        self._human_filter = guardrails.HumanClaimFilter(names)
        semantic = embedder.semantic
        curated = load_unsafe_requests()
        embed_examples = examples or embedder.embed

        def embed(texts) -> np.ndarray | None:
            texts = [rewrite(t.format(name=config.name)) for t in texts]
            return embed_examples(texts) if texts and semantic else None

        self._topics = [
            _Topic(
                name=t.name,
                reply=t.reply or config.replies.refusal,
                pattern=guardrails.keyword_pattern(t.keywords),
                examples=embed([*t.examples, *curated.topics.get(t.name, ())]),
                neighbours=embed(list(curated.topic_neighbours.get(t.name, ()))),
            )
            for t in config.topics_to_avoid
        ]
        self._disclosure_examples = embed([*DISCLOSURE_EXAMPLES, *curated.disclosure])
        self._disclosure_lookalikes = embed(
            [*DISCLOSURE_LOOKALIKES, *curated.disclosure_lookalikes]
        )
        self._unsafe_categories = np.array(curated.categories)
        self._unsafe, self._benign = (
            _curated_vectors(embedder, embed_examples) if semantic else (None, None)
        )
        # The votes' neighbours: the examples voted for first, then what must be answered.
        answered = [] if self._benign is None else [self._benign]
        answered += [corpus] if corpus is not None and len(corpus) else []
        self._neighbours: np.ndarray | None = None
        if self._unsafe is not None and len(self._unsafe):
            self._neighbours = np.vstack([self._unsafe, *answered]).astype(np.float32)
        topical = [
            (i, rows)
            for i, t in enumerate(self._topics)
            for rows in (t.examples, t.neighbours)
            if rows is not None
        ]
        self._topic_of = np.concatenate([np.full(len(e), i) for i, e in topical] or [[]])
        self._topic_neighbours: np.ndarray | None = None
        if topical:
            rows = [e for _, e in topical]
            self._topic_neighbours = np.vstack([*rows, *answered]).astype(np.float32)

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
        vote = self._vote(query)
        if vote is None:
            return None
        category, share, score = vote
        if share < UNSAFE_SHARE or score < self.votes.unsafe_floor:
            return None
        if self_harm >= SELF_HARM_ROUTE:
            category = SELF_HARM
        reason = f"unsafe:{category}:vote:{share:.2f}:similar:{score:.2f}"
        return Verdict("refusal", self._unsafe_reply(category), reason), score

    def _vote(self, query: np.ndarray) -> tuple[str, float, float] | None:
        """The nearest neighbours' vote: the unsafe category with the most weight among them,
        the unsafe share of the weight, and the nearest unsafe example's similarity."""
        if self._neighbours is None:
            return None
        by_category, share, top = votes.neighbour_vote(
            self._neighbours, self._unsafe_categories, query, self.votes.unsafe_neighbours
        )
        if not by_category:
            return None
        # Self-harm holding a good part of the unsafe weight: the supportive reply, not the
        # persona's refusal ("make it look like an accident so my family gets the insurance").
        total = sum(by_category.values())
        if by_category.get(SELF_HARM, 0.0) >= SELF_HARM_VOTE_SHARE * total:
            category = SELF_HARM
        else:
            category = max(by_category, key=by_category.__getitem__)
        return category, share, top

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
            return self._topic_vote(query, best_corpus_score)
        score, topic = best
        reason = f"topic:{topic.name}:similar:{score:.2f}"
        return Verdict("refusal", topic.reply, reason), score

    def _topic_vote(
        self, query: np.ndarray, best_corpus_score: float
    ) -> tuple[Verdict, float] | None:
        """The avoided topic that the turn's nearest neighbours vote for, if they do enough and
        its nearest example is ahead of the corpus by `MEANING_MARGIN`, as an example must be
        below `topic_similarity`: with mpnet the vote alone refused "How much money did you
        raise in 2019?" (personal_money, 0.11 ahead of the seed-round statement) while every
        avoided-topic question it caught in the tuning sets was at least 0.16 ahead."""
        if self._topic_neighbours is None:
            return None
        by_topic, share, top = votes.neighbour_vote(
            self._topic_neighbours, self._topic_of, query, TOPIC_NEIGHBOURS
        )
        if share < TOPIC_SHARE or top < self.votes.topic_floor:
            return None
        if top < best_corpus_score + MEANING_MARGIN:
            return None
        topic = self._topics[int(max(by_topic, key=by_topic.__getitem__))]
        reason = f"topic:{topic.name}:vote:{share:.2f}:similar:{top:.2f}"
        return Verdict("refusal", topic.reply, reason), top

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
