"""The one config schema of avatar-serve: `AppConfig`.

`deployments/configs/{local,gpu}.yaml` are instances of it, the Helm chart's `values.schema.json`
is generated from it (`scripts/gen_chart_schema.py`), and everything else receives the typed
objects it produces: `avatar talk` and the in-process pipeline read `stages` and `turn`,
`deployments.app.build_app` binds `stages.<name>` (backend, typed options, Serve options) to each
stage deployment and the whole `AppConfig` to the router. A file is validated once per process.

A stage's `options` are validated by its backend's own `Options` model (found through the lazy
registry, so only the named backend's module is imported) and kept as that typed model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from services.core.backend import BackendOptions
from services.core.registry import BACKENDS, STAGES, backend_class
from services.core.serve_options import DeploymentOptions
from services.core.settings import (
    DEFAULT_SYSTEM_PROMPT,
    ApiLimits,
    AuthSettings,
    HttpOptions,
    KeyLimits,
    LiveSettings,
    PersonaSettings,
    StorageSettings,
    TurnSettings,
    _Strict,
    is_loopback,
)

__all__ = [  # the settings sections are part of this module's interface
    "DEFAULT_SYSTEM_PROMPT",
    "ApiLimits",
    "AppConfig",
    "AuthSettings",
    "HttpOptions",
    "KeyLimits",
    "LiveSettings",
    "PersonaSettings",
    "StageConfig",
    "StorageSettings",
    "TurnSettings",
    "is_loopback",
    "load_app_config",
    "parse_app_config",
    "read_yaml",
    "validation_message",
]

DEFAULT_BACKENDS = {"asr": "whisper", "llm": "llama_cpp", "tts": "piper", "render": "head3d"}


class StageConfig(_Strict):
    """One stage: which backend it runs, that backend's options, and its Serve deployment."""

    stage: ClassVar[str] = ""

    backend: str = Field(description="Registered backend name (see `avatar backends`)")
    options: SerializeAsAny[BackendOptions] = Field(
        default_factory=dict,
        validate_default=True,
        description="Options of that backend (its own Options model; unknown keys are rejected)",
    )
    serve: DeploymentOptions = Field(
        default_factory=DeploymentOptions,
        description="Ray Serve options of this stage's deployment (unused in process)",
    )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, name: str) -> str:
        if name not in BACKENDS[cls.stage]:
            raise ValueError(
                f"unknown {cls.stage} backend {name!r}; "
                f"valid: {', '.join(sorted(BACKENDS[cls.stage]))}"
            )
        return name

    @field_validator("options", mode="before")
    @classmethod
    def _typed_options(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, BackendOptions) or "backend" not in info.data:
            return value  # already typed, or the backend itself was rejected
        try:
            options_model = backend_class(cls.stage, info.data["backend"]).Options
        except ImportError as exc:  # a backend module must import without its SDK: say which
            raise ValueError(str(exc)) from None
        return options_model.model_validate(value or {})


def _stage_model(stage: str) -> type[StageConfig]:
    model = type(f"{stage.upper()}StageConfig", (StageConfig,), {"__doc__": f"The {stage} stage."})
    model.stage = stage
    return model


ASRStageConfig = _stage_model("asr")
LLMStageConfig = _stage_model("llm")
TTSStageConfig = _stage_model("tts")
RenderStageConfig = _stage_model("render")


def _stage_field(model: type[StageConfig]):
    return Field(
        default_factory=lambda: model(backend=DEFAULT_BACKENDS[model.stage]),
        description=f"The {model.stage} stage: backend, options, Serve options",
    )


class StagesConfig(_Strict):
    """The four stages."""

    asr: ASRStageConfig = _stage_field(ASRStageConfig)
    llm: LLMStageConfig = _stage_field(LLMStageConfig)
    tts: TTSStageConfig = _stage_field(TTSStageConfig)
    render: RenderStageConfig = _stage_field(RenderStageConfig)

    def get(self, name: str) -> StageConfig:
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; valid stages: {', '.join(STAGES)}")
        return getattr(self, name)


class RouterConfig(_Strict):
    """The router deployment (HTTP + WebSocket ingress)."""

    serve: DeploymentOptions = Field(
        default_factory=DeploymentOptions, description="Ray Serve options of the router"
    )


class AppConfig(_Strict):
    """The whole app: what each stage runs, how it is deployed, and what the router serves."""

    name: str = Field("avatar", min_length=1, max_length=64, description="Serve app name")
    stages: StagesConfig = Field(default_factory=StagesConfig, description="The four stages")
    router: RouterConfig = Field(default_factory=RouterConfig, description="The ingress")
    turn: TurnSettings = Field(default_factory=TurnSettings, description="Turn bounds")
    live: LiveSettings = Field(
        default_factory=LiveSettings, description="Live listening (VAD, endpointing, barge-in)"
    )
    http: HttpOptions = Field(default_factory=HttpOptions, description="HTTP listener")
    storage: StorageSettings = Field(
        default_factory=StorageSettings, description="Sessions, history and the audit log"
    )
    limits: ApiLimits = Field(default_factory=ApiLimits, description="API input bounds")
    personas: PersonaSettings = Field(
        default_factory=PersonaSettings, description="Personas served"
    )
    auth: AuthSettings = Field(default_factory=AuthSettings, description="API keys and tenancy")

    def auth_mode(self) -> Literal["open", "keys"]:
        """`auth.resolved_mode` for this config's bind address `http.host`."""
        return self.auth.resolved_mode(self.http.host)

    def stage(self, name: str) -> StageConfig:
        """The config of one stage by name (asr, llm, tts, render)."""
        return self.stages.get(name)

    def deployment(self, name: str) -> DeploymentOptions:
        """Serve options of one deployment: a stage or `router`."""
        return self.router.serve if name == "router" else self.stage(name).serve

    def with_backends(self, backends: dict[str, str]) -> AppConfig:
        """A copy where the named stages run other backends (with those backends' defaults)."""
        stages = self.stages.model_copy()
        for stage, name in backends.items():
            current = self.stage(stage)
            if name != current.backend:
                model = type(current)
                setattr(stages, stage, model(backend=name, serve=current.serve))
        return self.model_copy(update={"stages": stages})


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


def validation_message(exc: ValidationError) -> str:
    """One line naming every rejected field by its dotted path."""
    return "; ".join(
        (".".join(str(p) for p in err["loc"]) or "config") + f": {err['msg']}"
        for err in exc.errors()
    )


def parse_app_config(data: dict[str, Any], *, where: str = "config") -> AppConfig:
    """Validate a config mapping; errors name `where` and each field."""
    try:
        return AppConfig.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{where}: {validation_message(exc)}") from None


def load_app_config(path: str | Path | None = None) -> AppConfig:
    """Load and validate an app config file (None = the built-in defaults)."""
    if path is None:
        return AppConfig()
    return parse_app_config(read_yaml(path), where=str(path))
