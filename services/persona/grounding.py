"""Grounded generation: every generated sentence is checked against the statements it cites.

In `generate` mode the LLM rewrites the person's statements into its own sentences, and a small
model invents things on the way (a founding year, a co-founder's name). `GroundingChecker` is
built per turn from the plan's sources and the persona's embedder, and decides for each sentence,
before it is spoken:

1. numbers: every number in it (digits, or number words from two to ninety) appears in a cited
   statement (`check_numbers`);
2. names: every capitalised word that is not the first word of the sentence (a name, an acronym)
   appears in a cited statement or is the persona's own name (`check_names`);
3. meaning: its cosine similarity to the closest cited statement, or sentence of one, reaches
   `min_similarity` (there is no entailment model offline, so similarity stands in for it).

A supported sentence is kept. An unsupported one is replaced by the next cited sentence, the
person's own words, in source order (best answer first) that this reply has not said yet
(`unsupported: replace`), or dropped
(`drop`, or when every cited sentence has been said). The persona's own post-filter (no claims
of being human) runs first, on the sentence and on any replacement.

`counts` is a plain dict the turn's metadata carries as `metadata["grounding"]`; it is filled in
as sentences pass, so the `done` event and the audit log see the final counts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from services.core.types import Source
from services.persona import lexical
from services.persona.corpus import split_sentences
from services.persona.embedder import Embedder
from services.persona.schema import GroundingSettings, PersonaConfig

OUTCOMES = ("kept", "replaced", "dropped", "filtered")

_DIGITS = re.compile(r"\d[\d,]*(?:\.\d+)?")
_WORD = re.compile(r"[A-Za-z][A-Za-z'’\-]*")
# The retrieval side's number words, less "zero" and "one": "one" is a pronoun as often as a
# count, and neither is a claim worth checking.
NUMBER_WORDS = {w: n for w, n in lexical.NUMBER_WORDS.items() if w not in ("zero", "one")}
# Capitalised words that are not claims about the world.
ALWAYS_ALLOWED = frozenset({"i", "ai", "ok", "okay"})
_I_CONTRACTION = re.compile(r"^i'(m|ve|d|ll)$")


def numbers_in(text: str) -> set[str]:
    """Numbers in `text`, normalised: "1,200" -> "1200", "twelve" -> "12"."""
    found = {m.group().replace(",", "").rstrip(".,") for m in _DIGITS.finditer(text)}
    for word in _WORD.findall(text.lower()):
        for part in word.split("-"):
            if part in NUMBER_WORDS:
                found.add(NUMBER_WORDS[part])
    return found


def _stem(word: str) -> str:
    word = word.lower().replace("’", "'").strip("'-")
    return word[:-2] if word.endswith("'s") else word


def names_in(sentence: str) -> set[str]:
    """Capitalised words (lower-cased, possessive removed), except the sentence's first word;
    of a hyphenated word only its capitalised parts ("AI-powered" -> "ai")."""
    parts = (p for w in _WORD.findall(sentence)[1:] for p in w.split("-"))
    names = {_stem(p) for p in parts if p[:1].isupper()}
    return {n for n in names if n not in ALWAYS_ALLOWED and not _I_CONTRACTION.match(n)}


def _words(texts: Iterable[str]) -> set[str]:
    words = (w for text in texts for w in _WORD.findall(text))
    return {_stem(part) for w in words for part in (w, *w.split("-"))}


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


class GroundingChecker:
    """Checks the sentences of one reply against its cited statements.

    Args:
        sources: The plan's cited statements (best first).
        embedder: The persona's embedder (`min_similarity` is on its scale: `per_embedder`).
        settings: The pack's `grounding` settings.
        pre_filter: The persona's post-filter ("" = must not be spoken), applied first.
        names: Texts whose words the twin may always say: the persona's names, its role line
            (in the system prompt) and the pack's generic terms (the company's name).
    """

    def __init__(
        self,
        sources: Sequence[Source],
        embedder: Embedder,
        settings: GroundingSettings,
        *,
        pre_filter: Callable[[str], str] | None = None,
        names: Sequence[str] = (),
    ) -> None:
        if not sources:
            raise ValueError("a grounding checker needs at least one cited statement")
        self.settings, self.embedder = settings, embedder
        self.pre_filter = pre_filter or (lambda sentence: sentence)
        texts = [s.text for s in sources]
        self._numbers = set().union(*(numbers_in(t) for t in texts))
        self._names = _words([*texts, *names])
        # Sentences first (replacement candidates, best source first), then whole statements.
        self._sentences = list(dict.fromkeys(s for t in texts for s in split_sentences(t)))
        self._units = self._sentences + [t for t in texts if t not in self._sentences]
        self._vectors: np.ndarray | None = None  # embedded on the first sentence checked
        self._said: set[str] = set()
        self.counts: dict[str, Any] = {
            "mode": settings.unsupported,
            "min_similarity": settings.min_similarity,
            "checked": 0,
            **{outcome: 0 for outcome in OUTCOMES},
            "sentences": [],
        }

    def support(self, sentence: str) -> tuple[bool, float, str | None, np.ndarray]:
        """(supported, best similarity, why not, similarity to each candidate sentence)."""
        if self._vectors is None:
            vectors = self.embedder.embed([*self._units, sentence])
            self._vectors, query = vectors[:-1], vectors[-1]
        else:
            query = self.embedder.embed_one(sentence)
        scores = self._vectors @ query
        best = float(scores.max())
        reason = None
        if self.settings.check_numbers:
            missing = sorted(numbers_in(sentence) - self._numbers)
            if missing:
                reason = f"number:{missing[0]}"
        if reason is None and self.settings.check_names:
            missing = sorted(names_in(sentence) - self._names)
            if missing:
                reason = f"name:{missing[0]}"
        if reason is None and best < self.settings.min_similarity:
            reason = f"similarity:{best:.2f}"
        return reason is None, best, reason, scores[: len(self._sentences)]

    def _replacement(self, scores: np.ndarray) -> str:
        # In the order of the sources (best answer to the question first), not by likeness to
        # the rejected sentence: a sentence a small model invented is a poor guide to what the
        # person said, and likeness to it picked off-topic lines (measured on the demo pack).
        del scores
        for candidate in self._sentences:
            if _key(candidate) not in self._said and self.pre_filter(candidate):
                return candidate
        return ""

    def __call__(self, sentence: str) -> str:
        """The sentence to speak in place of `sentence` ("" = nothing)."""
        if not sentence.strip():
            return ""
        self.counts["checked"] += 1
        if not self.pre_filter(sentence):
            return self._record("filtered", None, "persona_filter", "")
        supported, best, reason, scores = self.support(sentence)
        if supported:
            return self._record("kept", best, None, sentence)
        spoken = self._replacement(scores) if self.settings.unsupported == "replace" else ""
        return self._record("replaced" if spoken else "dropped", best, reason, spoken)

    def _record(self, outcome: str, similarity: float | None, reason: str | None, text: str):
        self.counts[outcome] += 1
        entry = {"outcome": outcome, "reason": reason}
        if similarity is not None:
            entry["similarity"] = round(similarity, 3)
        self.counts["sentences"].append(entry)
        if text:
            self._said.add(_key(text))
        return text


def sentence_filter(
    sources: Sequence[Source],
    embedder: Embedder,
    settings: GroundingSettings,
    pre_filter: Callable[[str], str],
    names: Sequence[str] = (),
) -> tuple[Callable[[str], str], dict[str, Any] | None]:
    """The turn's sentence filter and its live counts (None when grounding does not apply)."""
    if not settings.enabled or not sources:
        return pre_filter, None
    checker = GroundingChecker(sources, embedder, settings, pre_filter=pre_filter, names=names)
    return checker, checker.counts


def pack_names(config: PersonaConfig) -> tuple[str, ...]:
    """What the twin may always name: its own names, its role line and the generic terms."""
    return (config.display_name, config.name, config.role, *config.retrieval.generic_terms)


def supported_share(counts: dict[str, Any]) -> float:
    """Share of checked sentences spoken as generated (kept / checked)."""
    return counts["kept"] / counts["checked"] if counts.get("checked") else 0.0
