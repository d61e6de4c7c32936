"""The `persona.yaml` schema: every field described, bounded, and unknown keys rejected.

A typo in a pack must fail at `avatar persona validate`, not silently change how a real person's
twin behaves, so every section forbids extra keys and every value has limits. Rules that span
sections are validators here too: `greeting` and `replies.disclosure` must say it is an AI, and
a cloned voice or a likeness asset needs the matching consent scope. The consent record itself
is `consent.Consent`; reading files and turning validation errors into `PackError`s is
`pack`'s job.

The `retrieval:` and `grounding:` sections, whose thresholds are per embedder, are in
`schema_answers`; the strict base every section shares is `schema_base.Strict`.

Each field is documented by its `description=`, which `PersonaConfig.model_json_schema()` also
publishes. Pydantic copies a model's docstring into that schema as its description, so the
models' docstrings are one line saying what a section is for; notes for maintainers are comments.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from services.persona.consent import Consent
from services.persona.schema_answers import GroundingSettings, RetrievalSettings
from services.persona.schema_base import Strict

_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}[a-z0-9]$"
# The greeting and `replies.disclosure` are spoken as-is, so they must say plainly it is an AI.
_AI_WORD = re.compile(r"\b(AI|A\.I\.|artificial intelligence)\b", re.IGNORECASE)


class VoiceSettings(Strict):
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


class LookSettings(Strict):
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


class AvoidTopic(Strict):
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


class Replies(Strict):
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


class PersonaConfig(Strict):
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
