"""The base of every `persona.yaml` section (strict and immutable), and how a section takes
one embedder's calibrated values in place of the pack's own."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base of every section: unknown keys are errors, and a loaded config is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_S = TypeVar("_S", bound=Strict)


def calibrated(settings: _S, calibration: BaseModel | None) -> _S:
    """`settings` with one embedder's calibrated values (those set) in place of its own."""
    if calibration is None:
        return settings
    return settings.model_copy(update=calibration.model_dump(exclude_none=True))
