"""The `retrieval:` and `grounding:` sections of `persona.yaml`: how a pack finds the statement
that answers a turn, and how generated sentences are checked against it. Their thresholds are
on the embedder's scale, so each holds one set per embedder (`per_embedder`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from services.core.settings import EmbedderKey
from services.persona.schema_base import Strict, calibrated


class ScoreCalibration(Strict):
    """Score thresholds for one embedder (cosine scales differ); None keeps the pack's own."""

    min_score: float | None = Field(
        default=None, ge=0.0, le=2.0, description="`retrieval.min_score` for this embedder."
    )
    lexical_weight: float | None = Field(
        default=None, ge=0.0, le=1.0, description="`retrieval.lexical_weight` for this embedder."
    )
    answer_type_weight: float | None = Field(
        default=None, ge=0.0, le=0.5, description="`retrieval.answer_type_weight` for it."
    )
    topic_similarity: float | None = Field(
        default=None, ge=0.0, le=1.0, description="`retrieval.topic_similarity` for it."
    )


class RetrievalSettings(Strict):
    """How statements are retrieved for a turn.

    The score thresholds (`min_score`, `lexical_weight`, `answer_type_weight`,
    `topic_similarity`) are on the scale of the embedder that serves the pack; their defaults
    were chosen for the default embedder (mpnet) on the demo pack's dev questions. A pack
    calibrated for several embedders puts the others' values under `per_embedder`.
    """

    top_k: int = Field(default=3, ge=1, le=10, description="Statements returned as sources.")
    answer_mode: Literal["generate", "quote"] = Field(
        default="generate",
        description=(
            "generate: the LLM answers from the quoted statements; quote: the twin speaks the "
            "best statement verbatim (the person's own words; for small LLMs that invent facts)."
        ),
    )
    prompt_statements: int = Field(
        default=3, ge=1, le=5, description="Of those, how many go verbatim into the LLM prompt."
    )
    min_score: float = Field(
        default=0.50,
        ge=0.0,
        le=2.0,
        description=(
            "Hybrid score (best-view cosine similarity plus lexical_weight x word coverage) the "
            "best statement must reach for a question to be answered; below it the twin says "
            "it has nothing on that."
        ),
    )
    lexical_weight: float = Field(
        default=0.10,
        ge=0.0,
        le=1.0,
        description=(
            "Weight of word coverage (IDF-weighted share of the question's content words a "
            "statement contains) added to the cosine similarity when ranking statements."
        ),
    )
    answer_type_weight: float = Field(
        default=0.0,
        ge=0.0,
        le=0.5,
        description=(
            "Bonus to a statement that gives the kind of answer a when / how long / how many "
            "question asks for (a date, a duration, a number); a tie-breaker, not evidence."
        ),
    )
    check_entities: bool = Field(
        default=True,
        description=(
            "No answer when the question names a person, place or number (other than the "
            "persona's own names) that the chosen statement never names, even as a variant."
        ),
    )
    support_margin: float | None = Field(
        default=None,
        ge=-0.5,
        le=0.5,
        description=(
            "No answer when the chosen statement's similarity drops by less than this once the "
            "question's words it lacks are removed (they were not what it matched); None "
            "disables the check (the default: on the dev questions it declined as many "
            "answerable questions as unanswerable ones, and it costs one more embedding)."
        ),
    )
    max_quote_statements: int = Field(
        default=2,
        ge=1,
        le=2,
        description=(
            "Quote mode: statements the twin may join, verbatim, when a second one covers "
            "question words the first lacks."
        ),
    )
    join_margin: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Quote mode: how far below the first a joined statement's score may be.",
    )
    topic_similarity: float = Field(
        default=0.70,
        ge=0.0,
        le=1.0,
        description="Similarity to an avoid-topic or disclosure example that triggers it.",
    )
    history_messages: int = Field(
        default=4, ge=0, le=20, description="Earlier messages of the conversation in the prompt."
    )
    generic_terms: dict[str, str] = Field(
        default_factory=dict,
        max_length=20,
        description=(
            "Names that run through the whole corpus (the company's) -> a generic phrase, applied "
            "to statements and questions before embedding, so that merely naming the company "
            "does not make an unanswerable question look answerable."
        ),
    )

    per_embedder: dict[EmbedderKey, ScoreCalibration] = Field(
        default_factory=dict,
        description=(
            "Thresholds for other embedders (key as in the deployment's `persona.embedder`), "
            "over the values above; e.g. `minilm: {min_score: 0.56, lexical_weight: 0.35}`."
        ),
    )

    def for_embedder(self, key: str) -> RetrievalSettings:
        """These settings with `per_embedder[key]`'s values in place of the pack's own."""
        return calibrated(self, self.per_embedder.get(key))  # type: ignore[call-overload]

    @field_validator("generic_terms")
    @classmethod
    def _bounded_terms(cls, value: dict[str, str]) -> dict[str, str]:
        for term, replacement in value.items():
            if not 1 <= len(term.strip()) <= 60 or len(replacement) > 60:
                raise ValueError("terms must be 1-60 characters, replacements at most 60")
        return value


class GroundingCalibration(Strict):
    """The grounding threshold for one embedder (cosine scales differ)."""

    min_similarity: float = Field(
        ge=0.0, le=1.0, description="`grounding.min_similarity` for this embedder."
    )


class GroundingSettings(Strict):
    """How generated sentences are checked against the statements they cite (generate mode)."""

    # Used by `grounding.GroundingChecker`; `min_similarity` was chosen for mpnet on hand-labelled
    # sentences of the dev questions (loadtests/grounding_labels.yaml, `python -m
    # loadtests.calibrate_grounding`), MiniLM's on an earlier labelling (packs/README.md).
    enabled: bool = Field(
        default=True,
        description=(
            "Check every generated sentence of a sourced answer before it is spoken; quote mode "
            "and canned replies are never checked (they are the person's or the pack's words)."
        ),
    )
    min_similarity: float = Field(
        default=0.75,
        ge=0.0,
        le=1.0,
        description=(
            "Cosine similarity (on the default embedder's, mpnet's, scale) a sentence must "
            "reach with the closest cited statement, or sentence of one, to count as supported."
        ),
    )
    unsupported: Literal["replace", "drop"] = Field(
        default="replace",
        description=(
            "What happens to an unsupported sentence: replace = speak the next cited sentence "
            "(best source first) in the person's own words instead (never the same one twice "
            "in a reply); drop = say nothing in its place."
        ),
    )
    check_numbers: bool = Field(
        default=True, description="Every number in a sentence must appear in a cited statement."
    )
    check_names: bool = Field(
        default=True,
        description="Every capitalised name in a sentence must appear in a cited statement.",
    )
    per_embedder: dict[EmbedderKey, GroundingCalibration] = Field(
        default_factory=dict,
        description=(
            "`min_similarity` for other embedders (key as in the deployment's "
            "`persona.embedder`); e.g. `minilm: {min_similarity: 0.65}`."
        ),
    )

    def for_embedder(self, key: str) -> GroundingSettings:
        """These settings with `per_embedder[key]`'s threshold in place of the pack's own."""
        return calibrated(self, self.per_embedder.get(key))  # type: ignore[call-overload]
