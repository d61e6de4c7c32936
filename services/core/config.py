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

import ipaddress
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from services.core.backend import BackendOptions
from services.core.registry import BACKENDS, STAGES, backend_class
from services.core.serve_options import DeploymentOptions

DEFAULT_BACKENDS = {"asr": "whisper", "llm": "llama_cpp", "tts": "piper", "render": "head3d"}
DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly AI avatar. Answer in one to three short, plain sentences."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    """Which personas the app serves."""

    default: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Persona of sessions that name none (None = plain chat, no persona)",
    )
    packs_dir: str | None = Field(
        None,
        max_length=1000,
        description="Folder of persona packs (None = $AVATAR_PERSONA_DIR or the bundled packs)",
    )
    index_dir: str | None = Field(
        None,
        max_length=1000,
        description="Retrieval indexes (None = $AVATAR_PERSONA_INDEX_DIR or a user cache)",
    )
    embedder: Literal["minilm", "hashing"] = Field(
        "minilm", description="Sentence embedder (hashing: model-free, for tests only)"
    )

    def resolved_packs_dir(self) -> str | None:
        return self.packs_dir or os.environ.get("AVATAR_PERSONA_DIR")


class StorageSettings(_Strict):
    """One database for sessions, their history and the turn audit log."""

    url: str | None = Field(
        None,
        max_length=2000,
        description="Database URL: postgresql://user@host:5432/db or sqlite:///path "
        "(None = the URL in the environment variable `url_env`, else SQLite at `sqlite_path`)",
    )
    url_env: str = Field(
        "AVATAR_DATABASE_URL",
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        max_length=128,
        description="Environment variable holding the URL when `url` is unset (the Helm chart "
        "fills it from a Secret, so a password never sits in the config)",
    )
    sqlite_path: str = Field(
        "~/.cache/avatar-serve/avatar.sqlite3",
        min_length=1,
        max_length=1000,
        description="SQLite file used when no URL is configured (one machine only)",
    )
    session_ttl_s: float = Field(
        3600.0, gt=0, le=30 * 86400, description="Idle sessions expire after this long"
    )

    def resolved_url(self) -> str:
        """The URL in force: `url`, else `$url_env`, else the SQLite file."""
        url = self.url or os.environ.get(self.url_env)
        if url:
            return url
        return f"sqlite:///{Path(self.sqlite_path).expanduser()}"


class HttpOptions(_Strict):
    """Where `avatar serve` listens (on Kubernetes the chart sets the proxies' address)."""

    host: str = Field("127.0.0.1", max_length=255, description="Bind address (loopback default)")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port")


class ApiLimits(_Strict):
    """Bounds on what a client may send."""

    max_audio_bytes: int = Field(
        10 * 2**20, ge=1024, le=2**30, description="Largest accepted audio upload"
    )
    max_sessions: int = Field(1000, ge=1, le=10**6, description="Open sessions at most")
    max_sockets_per_replica: int = Field(
        24,
        ge=1,
        le=100000,
        description="Open WebSockets per router replica; more are told 503 and closed (keep "
        "below the router's max_ongoing_requests, or Serve's proxy answers 500 instead)",
    )


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches: localhost, 127.0.0.0/8, ::1."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class AuthSettings(_Strict):
    """Who may call the API: API keys per tenant (`avatar keys`), or nobody checked (open)."""

    mode: Literal["auto", "open", "keys"] = Field(
        "auto",
        description="keys: every request needs an API key; open: no checks (local development "
        "only); auto: open when `http.host` is loopback, keys otherwise",
    )
    allow_open_network: bool = Field(
        False,
        description="Let mode open serve a non-loopback address (anyone reaching the port may "
        "talk to every persona and read every session); refused otherwise",
    )
    key_cache_s: float = Field(
        5.0,
        ge=0,
        le=300,
        description="How long a verified key is trusted before the database is asked again: a "
        "revoked key stops working (and its open sockets close) within this long",
    )
    bootstrap_key_env: str = Field(
        "AVATAR_BOOTSTRAP_KEY",
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        max_length=128,
        description="Environment variable that may hold a token (`avatar keys generate`) the "
        "router stores, hashed, as an admin key at start (the Helm chart fills it from a Secret)",
    )
    bootstrap_tenant: str = Field(
        "admin",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="Tenant of the bootstrap key",
    )

    def resolved_mode(self, host: str) -> Literal["open", "keys"]:
        """The mode in force when serving on `host`; ValueError for open on the network."""
        mode = self.mode if self.mode != "auto" else ("open" if is_loopback(host) else "keys")
        if mode == "open" and not is_loopback(host) and not self.allow_open_network:
            raise ValueError(
                f"auth.mode {self.mode} would serve {host} without API keys: bind 127.0.0.1, "
                "use auth.mode keys (create keys with `avatar keys create`), or set "
                "auth.allow_open_network: true on a network you trust"
            )
        return mode


class AppConfig(_Strict):
    """The whole app: what each stage runs, how it is deployed, and what the router serves."""

    name: str = Field("avatar", min_length=1, max_length=64, description="Serve app name")
    stages: StagesConfig = Field(default_factory=StagesConfig, description="The four stages")
    router: RouterConfig = Field(default_factory=RouterConfig, description="The ingress")
    turn: TurnSettings = Field(default_factory=TurnSettings, description="Turn bounds")
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
