"""The `persona.yaml` schema: every field described, bounded, and unknown keys rejected.

A typo in a pack must fail at `avatar persona validate`, not silently change how a real person's
twin behaves, so every section forbids extra keys and every value has limits. Rules that span
sections are validators here too: `greeting` and `replies.disclosure` must say it is an AI, and
a cloned voice or a likeness asset needs the matching consent scope. The consent record itself
is `consent.Consent`; reading files and turning validation errors into `PackError`s is
`pack`'s job.

Each field is documented by its `description=`, which `PersonaConfig.model_json_schema()` also
publishes. Pydantic copies a model's docstring into that schema as its description, so the
models' docstrings are one line saying what a section is for; notes for maintainers are comments.
"""

from __future__ import annotations

import re
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.persona.consent import Consent

_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}[a-z0-9]$"
# The greeting and `replies.disclosure` are spoken as-is, so they must say plainly it is an AI.
_AI_WORD = re.compile(r"\b(AI|A\.I\.|artificial intelligence)\b", re.IGNORECASE)


class _Strict(BaseModel):
    """Base of every section: unknown keys are errors, and a loaded config is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_S = TypeVar("_S", bound=_Strict)


class VoiceSettings(_Strict):
    """How the persona sounds; passed per request to the TTS stage."""

    piper_voice: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description=(
            "Piper voice (.onnx path, relative to the pack or absolute); null = the TTS "
            "replica's configured default voice."
        ),
    )
    speed: float = Field(default=1.0, ge=0.5, le=2.0, description="Speaking rate; >1 is faster.")


class LookSettings(_Strict):
    """How the persona looks; passed per request to the render stage as an `AvatarLook`."""

    asset_path: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="glTF head asset (relative to the pack or absolute); null = renderer default.",
    )
    skin_rgb: tuple[float, float, float] = Field(
        default=(0.87, 0.70, 0.60), description="Skin colour, linear RGB, each in [0, 1]."
    )
    background_rgb: tuple[float, float, float] = Field(
        default=(0.16, 0.18, 0.22), description="Background colour, linear RGB, each in [0, 1]."
    )

    @field_validator("skin_rgb", "background_rgb")
    @classmethod
    def _unit_range(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(not 0.0 <= channel <= 1.0 for channel in value):
            raise ValueError("each channel must be in [0, 1]")
        return value


class AvoidTopic(_Strict):
    """A topic the twin declines, detected in code (keywords; examples by embedding)."""

    name: str = Field(min_length=1, max_length=80, description="Short label, used in audit logs.")
    keywords: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Words or phrases (case-insensitive, whole words) that trigger a refusal.",
    )
    examples: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Example questions; a user turn this close in meaning is refused too.",
    )
    reply: str | None = Field(
        default=None,
        min_length=1,
        max_length=400,
        description="Refusal for this topic in the persona's style; null = `replies.refusal`.",
    )

    @model_validator(mode="after")
    def _has_trigger(self) -> AvoidTopic:
        if not self.keywords and not self.examples:
            raise ValueError("give keywords or examples, or the topic can never trigger")
        if any(not k.strip() or len(k) > 80 for k in self.keywords):
            raise ValueError("keywords must be non-empty and at most 80 characters")
        return self


class Replies(_Strict):
    """Canned replies in the persona's voice, spoken without calling the LLM."""

    disclosure: str = Field(
        min_length=10,
        max_length=400,
        description="Answer to 'are you real / a bot?'; must say it is an AI.",
    )
    refusal: str = Field(
        min_length=10, max_length=400, description="Polite refusal for an avoided topic."
    )
    unsafe: str = Field(
        min_length=10, max_length=400, description="Polite refusal for unsafe requests."
    )
    no_answer: str = Field(
        min_length=10,
        max_length=400,
        description="When the corpus has nothing that supports an answer: decline to guess.",
    )
    not_heard: str = Field(
        default="Sorry, I didn't catch that. Could you say it again?",
        min_length=5,
        max_length=200,
        description="Reply to an empty or unintelligible turn.",
    )

    @field_validator("disclosure")
    @classmethod
    def _says_ai(cls, value: str) -> str:
        if not _AI_WORD.search(value):
            raise ValueError("must say plainly that this is an AI (contain the word 'AI')")
        return value


def _calibrated(settings: _S, calibration: BaseModel | None) -> _S:
    """`settings` with one embedder's calibrated values (those set) in place of its own."""
    if calibration is None:
        return settings
    return settings.model_copy(update=calibration.model_dump(exclude_none=True))


class ScoreCalibration(_Strict):
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


class RetrievalSettings(_Strict):
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

    per_embedder: dict[Literal["mpnet", "minilm", "hashing"], ScoreCalibration] = Field(
        default_factory=dict,
        description=(
            "Thresholds for other embedders (key as in the deployment's `persona.embedder`), "
            "over the values above; e.g. `minilm: {min_score: 0.56, lexical_weight: 0.35}`."
        ),
    )

    def for_embedder(self, key: str) -> RetrievalSettings:
        """These settings with `per_embedder[key]`'s values in place of the pack's own."""
        return _calibrated(self, self.per_embedder.get(key))  # type: ignore[call-overload]

    @field_validator("generic_terms")
    @classmethod
    def _bounded_terms(cls, value: dict[str, str]) -> dict[str, str]:
        for term, replacement in value.items():
            if not 1 <= len(term.strip()) <= 60 or len(replacement) > 60:
                raise ValueError("terms must be 1-60 characters, replacements at most 60")
        return value


class GroundingCalibration(_Strict):
    """The grounding threshold for one embedder (cosine scales differ)."""

    min_similarity: float = Field(
        ge=0.0, le=1.0, description="`grounding.min_similarity` for this embedder."
    )


class GroundingSettings(_Strict):
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
    per_embedder: dict[Literal["mpnet", "minilm", "hashing"], GroundingCalibration] = Field(
        default_factory=dict,
        description=(
            "`min_similarity` for other embedders (key as in the deployment's "
            "`persona.embedder`); e.g. `minilm: {min_similarity: 0.65}`."
        ),
    )

    def for_embedder(self, key: str) -> GroundingSettings:
        """These settings with `per_embedder[key]`'s threshold in place of the pack's own."""
        return _calibrated(self, self.per_embedder.get(key))  # type: ignore[call-overload]


class PersonaConfig(_Strict):
    """`persona.yaml`: everything about a persona except its corpus."""

    # `pack.load_config` also checks what the file alone cannot tell: that `id` equals the
    # folder name and that the consent has not expired.

    id: str = Field(
        pattern=_ID_PATTERN,
        description="Stable id, lowercase letters/digits/dashes; must equal the folder name.",
    )
    display_name: str = Field(min_length=1, max_length=100, description="Name shown to users.")
    short_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=40,
        description="What users call them ('Maya'); null = first word of display_name.",
    )
    role: str = Field(
        min_length=1, max_length=200, description="One line: who they are ('CEO of X')."
    )
    speaking_style: str = Field(
        min_length=1,
        max_length=400,
        description="How they talk, one or two sentences; goes into the system prompt.",
    )
    greeting: str = Field(
        min_length=10,
        max_length=400,
        description="First thing the twin says in a session; must disclose that it is an AI.",
    )
    topics_to_avoid: list[AvoidTopic] = Field(
        default_factory=list, max_length=50, description="Topics the twin declines."
    )
    replies: Replies = Field(description="Canned replies for the non-LLM paths.")
    voice: VoiceSettings = Field(default_factory=VoiceSettings, description="TTS parameters.")
    look: LookSettings = Field(default_factory=LookSettings, description="Render parameters.")
    consent: Consent = Field(description="The consent record this twin is served under.")
    retention_days: int | None = Field(
        default=None,
        ge=1,
        le=36500,
        description=(
            "Days the twin's conversations are kept in the audit log before the purge deletes "
            "them; null = the cluster's storage.retention_days."
        ),
    )
    retrieval: RetrievalSettings = Field(
        default_factory=RetrievalSettings, description="Retrieval and prompt settings."
    )
    grounding: GroundingSettings = Field(
        default_factory=GroundingSettings,
        description="Checks of generated sentences against the cited statements.",
    )

    @field_validator("greeting")
    @classmethod
    def _greeting_discloses(cls, value: str) -> str:
        # The session-start disclosure is a product rule: enforce it where packs are written.
        if not _AI_WORD.search(value):
            raise ValueError("must disclose that this is an AI (contain the word 'AI')")
        return value

    @model_validator(mode="after")
    def _consent_covers_use(self) -> PersonaConfig:
        if self.voice.piper_voice is not None and "voice" not in self.consent.scope:
            raise ValueError("voice.piper_voice is set but consent.scope lacks 'voice'")
        if self.look.asset_path is not None and "likeness" not in self.consent.scope:
            raise ValueError("look.asset_path is set but consent.scope lacks 'likeness'")
        if self.retrieval.prompt_statements > self.retrieval.top_k:
            raise ValueError("retrieval.prompt_statements must not exceed retrieval.top_k")
        return self

    @property
    def name(self) -> str:
        """What users call the persona."""
        return self.short_name or self.display_name.split()[0]
