"""Pydantic config of the in-process pipeline: one backend per stage plus turn bounds.

`deployments/config.py` extends these models with Ray Serve options, so one YAML file
describes the whole app and the same stage settings drive both the library and the cluster.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from services.registry import UnknownBackendError, backend_class, backend_names

DEFAULT_BACKENDS = {"asr": "whisper", "llm": "llama_cpp", "tts": "piper", "render": "head3d"}
DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly AI avatar. Answer in one to three short, plain sentences."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StageConfig(_Strict):
    """Which backend a stage runs and that backend's options (validated by the backend)."""

    stage: str = Field(description="Stage name: asr, llm, tts or render", exclude=True)
    backend: str = Field(description="Registered backend name (see `avatar backends`)")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Backend options; unknown keys are rejected"
    )

    @model_validator(mode="after")
    def _check_backend(self) -> StageConfig:
        if self.backend not in backend_names(self.stage):
            raise ValueError(
                f"unknown {self.stage} backend {self.backend!r}; valid: "
                + ", ".join(backend_names(self.stage))
            )
        try:
            options_model = backend_class(self.stage, self.backend).Options
        except ImportError:
            # A backend whose SDK is absent here (e.g. Riva on a laptop) is checked where it runs.
            return self
        try:
            options_model(**self.options)
        except ValidationError as exc:
            raise ValueError(f"{self.stage}.options ({self.backend}): {exc}") from None
        return self

    def validated_options(self):
        """The options parsed by the backend's own model (imports the backend module)."""
        return backend_class(self.stage, self.backend).Options(**self.options)


def _stage_field(stage: str):
    return Field(
        default_factory=lambda: StageConfig(stage=stage, backend=DEFAULT_BACKENDS[stage]),
        description=f"The {stage} stage",
    )


class TurnSettings(_Strict):
    """Bounds on one conversational turn."""

    max_tokens: int = Field(120, ge=8, le=2048, description="Hard cap on generated tokens")
    max_sentences: int = Field(
        3, ge=1, le=20, description="Stop generating after this many sentences"
    )
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="LLM sampling temperature")
    first_clause_chars: int | None = Field(
        60,
        ge=10,
        le=400,
        description="Let the first spoken chunk end at a clause once this long (None = never)",
    )
    history_turns: int = Field(
        4, ge=0, le=50, description="Previous user/assistant turns sent to the LLM"
    )
    system_prompt: str = Field(
        DEFAULT_SYSTEM_PROMPT, min_length=1, max_length=8000, description="LLM system prompt"
    )
    max_input_chars: int = Field(2000, ge=1, le=100_000, description="Longest accepted user text")
    max_audio_s: float = Field(30.0, gt=0, le=600, description="Longest accepted user audio")


class PersonaSettings(_Strict):
    """Which personas the app serves and where their turns are logged."""

    default: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Persona of sessions that name none (None = plain chat, no persona)",
    )
    packs_dir: str | None = Field(
        None, description="Folder of persona packs (None = $AVATAR_PERSONA_DIR or the bundled)"
    )
    index_dir: str | None = Field(
        None, description="Retrieval indexes (None = $AVATAR_PERSONA_INDEX_DIR or a user cache)"
    )
    embedder: Literal["minilm", "hashing"] = Field(
        "minilm", description="Sentence embedder (hashing: model-free, for tests only)"
    )
    transcripts_dsn: str | None = Field(
        None, max_length=2000, description="PostgreSQL DSN of the audit log (None = SQLite)"
    )
    transcripts_path: str = Field(
        "~/.cache/avatar-serve/transcripts.sqlite3",
        min_length=1,
        description="SQLite audit log when no DSN is set",
    )

    def resolved_packs_dir(self) -> str | None:
        return self.packs_dir or os.environ.get("AVATAR_PERSONA_DIR")


class PipelineConfig(_Strict):
    """The four stages and the turn bounds."""

    asr: StageConfig = _stage_field("asr")
    llm: StageConfig = _stage_field("llm")
    tts: StageConfig = _stage_field("tts")
    render: StageConfig = _stage_field("render")
    turn: TurnSettings = Field(default_factory=TurnSettings, description="Turn bounds")

    @field_validator("asr", "llm", "tts", "render", mode="before")
    @classmethod
    def _inject_stage(cls, value: Any, info) -> Any:
        if isinstance(value, dict):
            return {**value, "stage": info.field_name}
        return value

    def stage(self, name: str) -> StageConfig:
        if name not in DEFAULT_BACKENDS:
            raise UnknownBackendError(f"unknown stage {name!r}")
        return getattr(self, name)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file is a ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


def load_persona_settings(path: str | Path | None) -> PersonaSettings:
    """The `personas:` section of an app config file."""
    if path is None:
        return PersonaSettings()
    try:
        return PersonaSettings(**read_yaml(path).get("personas", {}))
    except ValidationError as exc:
        raise ValueError(f"{path}: personas: {exc}") from None


def load_pipeline_config(path: str | Path | None) -> PipelineConfig:
    """The `pipeline:` section of an app config file (the Serve sections are the cluster's)."""
    if path is None:
        return PipelineConfig()
    data = read_yaml(path)
    section = data.get("pipeline", {})
    try:
        return PipelineConfig(**section)
    except ValidationError as exc:
        raise ValueError(f"{path}: pipeline: {exc}") from None
