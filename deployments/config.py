"""One pydantic `AppConfig` for the whole app: the pipeline plus Ray Serve options per stage.

No Ray import here: the same model validates `deployments/configs/*.yaml`, drives `build_app`,
and is what the Helm chart's `serveConfigV2` is generated from. Serve options come from this
config, never from hard-coded decorators.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.config import PersonaSettings, PipelineConfig, read_yaml

STAGES = ("asr", "llm", "tts", "render")
DEPLOYMENTS = (*STAGES, "router")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AutoscalingConfig(_Strict):
    """Ray Serve autoscaling for one deployment (field names are Serve's own)."""

    min_replicas: int = Field(1, ge=0, le=1000, description="Fewest replicas")
    max_replicas: int = Field(1, ge=1, le=1000, description="Most replicas")
    initial_replicas: int | None = Field(None, ge=0, le=1000, description="Replicas at start")
    target_ongoing_requests: float = Field(
        2.0, gt=0, le=1000, description="Ongoing requests per replica the autoscaler aims for"
    )
    upscale_delay_s: float = Field(30.0, ge=0, le=3600, description="Wait before scaling up")
    downscale_delay_s: float = Field(600.0, ge=0, le=86400, description="Wait before scaling down")
    look_back_period_s: float = Field(
        30.0, gt=0, le=3600, description="Window over which load is averaged"
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})"
            )
        if self.initial_replicas is not None and not (
            self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError("initial_replicas must lie within [min_replicas, max_replicas]")
        return self


class RayActorOptions(_Strict):
    """Resources each replica reserves (fractional GPUs share one device)."""

    num_cpus: float = Field(1.0, ge=0, le=256, description="CPUs per replica")
    num_gpus: float = Field(0.0, ge=0, le=16, description="GPUs per replica; 0.25 = quarter GPU")
    memory: int | None = Field(
        None, ge=0, description="Memory per replica in bytes, for scheduling (None = no claim)"
    )
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources, e.g. {pool_llm: 1} to pin a stage to its node pool",
    )


class DeploymentOptions(_Strict):
    """Ray Serve options of one deployment."""

    num_replicas: int | None = Field(
        None, ge=1, le=1000, description="Fixed replica count (or use autoscaling_config)"
    )
    autoscaling_config: AutoscalingConfig | None = Field(
        None, description="Autoscaling instead of a fixed count"
    )
    max_ongoing_requests: int = Field(
        8, ge=1, le=10000, description="Requests one replica works on at once"
    )
    max_queued_requests: int = Field(
        32,
        ge=-1,
        le=100000,
        description="Requests queued per caller before Serve rejects with 503 (-1 = unbounded)",
    )
    ray_actor_options: RayActorOptions = Field(
        default_factory=RayActorOptions, description="Resources per replica"
    )
    health_check_period_s: float = Field(10.0, gt=0, le=600, description="Health check period")
    graceful_shutdown_timeout_s: float = Field(
        20.0, ge=0, le=3600, description="Time a stopping replica gets to finish requests"
    )

    @model_validator(mode="after")
    def _one_scaling_mode(self) -> DeploymentOptions:
        if self.num_replicas is not None and self.autoscaling_config is not None:
            raise ValueError("set num_replicas or autoscaling_config, not both")
        return self

    def serve_options(self) -> dict[str, Any]:
        """Keyword arguments for `serve.deployment(...)` / a Serve config deployment entry."""
        options = self.model_dump(exclude_none=True)
        actor = self.ray_actor_options.model_dump(exclude_none=True)
        if not actor["resources"]:
            del actor["resources"]
        options["ray_actor_options"] = actor
        if self.num_replicas is None and self.autoscaling_config is None:
            options["num_replicas"] = 1
        return options


class HttpOptions(_Strict):
    """Where the router listens."""

    host: str = Field("127.0.0.1", description="Bind address (loopback by default)")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port")


class StateOptions(_Strict):
    """Conversation state, kept outside router replicas so it survives their restarts."""

    backend: Literal["sqlite", "postgres"] = Field("sqlite", description="Where sessions live")
    sqlite_path: str = Field(
        "~/.cache/avatar-serve/sessions.db", description="SQLite file (sqlite backend)"
    )
    dsn: str | None = Field(None, description="PostgreSQL DSN (postgres backend)")
    session_ttl_s: float = Field(
        3600.0, gt=0, le=30 * 86400, description="Idle sessions expire after this long"
    )

    @model_validator(mode="after")
    def _dsn_for_postgres(self) -> StateOptions:
        if self.backend == "postgres" and not self.dsn:
            raise ValueError("state.dsn is required when state.backend is postgres")
        return self


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


def _default_deployments() -> dict[str, DeploymentOptions]:
    return {name: DeploymentOptions() for name in DEPLOYMENTS}


class AppConfig(_Strict):
    """The whole app: what each stage runs and how it is deployed."""

    name: str = Field("avatar", min_length=1, max_length=64, description="Serve app name")
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig, description="Stages + turn")
    deployments: dict[str, DeploymentOptions] = Field(
        default_factory=_default_deployments,
        description="Serve options per deployment: asr, llm, tts, render, router",
    )
    http: HttpOptions = Field(default_factory=HttpOptions, description="HTTP listener")
    state: StateOptions = Field(default_factory=StateOptions, description="Session state")
    limits: ApiLimits = Field(default_factory=ApiLimits, description="API input bounds")
    personas: PersonaSettings = Field(
        default_factory=PersonaSettings, description="Personas and the turn audit log"
    )

    @model_validator(mode="after")
    def _known_deployments(self) -> AppConfig:
        unknown = set(self.deployments) - set(DEPLOYMENTS)
        if unknown:
            raise ValueError(
                f"unknown deployments {sorted(unknown)}; valid: {', '.join(DEPLOYMENTS)}"
            )
        for name in DEPLOYMENTS:
            self.deployments.setdefault(name, DeploymentOptions())
        return self


def load_app_config(path: str | Path) -> AppConfig:
    """Load and validate an app config file; errors name the file and the field."""
    data = read_yaml(path)
    try:
        return AppConfig(**data)
    except ValidationError as exc:
        fields = "; ".join(
            ".".join(str(p) for p in err["loc"]) + f": {err['msg']}" for err in exc.errors()
        )
        raise ValueError(f"{path}: {fields}") from None
