"""The consent record a persona is served under: who agreed, when, to what, until when.

Consent is part of the pack's schema (`persona.yaml: consent`), not a comment beside it, so the
rules are checked by code: the scope must cover the corpus (`statements`), dates must make
sense, and an expired consent makes the pack unservable (`pack.load_config` refuses it). The
rules that tie consent to *other* settings (a cloned voice needs `voice`, a likeness asset
needs `likeness`) live on `schema.PersonaConfig`, which sees both sides.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from services.persona.schema_base import Strict

ConsentScope = Literal[
    "statements",  # the corpus may be used to answer as the person
    "voice",  # a voice cloned from / chosen to resemble the person
    "likeness",  # a face or avatar asset resembling the person
    "public_deployment",  # may be shown to the public, not only internally
    "transcripts",  # conversations with the twin may be logged and reviewed
]


def _today() -> date:
    """Today's date in UTC: consent dates are compared the same way on every replica."""
    return datetime.now(UTC).date()


class Consent(Strict):
    """Who agreed to this twin existing, when, and to what."""

    # One-line docstring: pydantic publishes it as this section's JSON schema description; the
    # fields document themselves with `description=`. `to_dict()` is what clients receive in
    # every plan's disclosure metadata.

    granted_by: str = Field(
        min_length=1, max_length=200, description="The person (or estate) who gave consent."
    )
    granted_at: date = Field(description="Date consent was given (ISO 8601).")
    scope: list[ConsentScope] = Field(
        min_length=1, max_length=5, description="What the consent covers; must include statements."
    )
    expires_at: date | None = Field(
        default=None, description="Date after which the twin must not be served; null = no expiry."
    )
    document: str | None = Field(
        default=None,
        max_length=500,
        description="Reference to the signed consent record (ticket, file, URL).",
    )

    @model_validator(mode="after")
    def _coherent(self) -> Consent:
        if "statements" not in self.scope:
            raise ValueError("scope must include 'statements' (the corpus is the twin's knowledge)")
        if len(set(self.scope)) != len(self.scope):
            raise ValueError("scope lists an entry twice")
        if self.expires_at is not None and self.expires_at <= self.granted_at:
            raise ValueError("expires_at must be after granted_at")
        if self.granted_at > _today():
            raise ValueError("granted_at is in the future")
        return self

    def is_expired(self) -> bool:
        """True once `expires_at` has passed.

        Not part of the validator above: an expired record is still well-formed, it only
        forbids serving the twin, which `pack.load_config` enforces with an error that names
        `consent.expires_at`.
        """
        return self.expires_at is not None and self.expires_at < _today()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy (dates as ISO 8601 strings)."""
        return {
            "granted_by": self.granted_by,
            "granted_at": self.granted_at.isoformat(),
            "scope": list(self.scope),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "document": self.document,
        }
