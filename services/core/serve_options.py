"""Ray Serve options of one deployment, as plain pydantic data (no Ray import).

Field names are Serve's own, so `DeploymentOptions.serve_options()` goes straight into
`serve.deployment(...)` and into a KubeRay `serveConfigV2` deployment entry.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
        20.0,
        ge=0,
        le=3600,
        description="Time a stopping replica (downscale, upgrade) gets to finish its in-flight "
        "requests (turns, open WebSockets) after it stops taking new ones; then it is killed",
    )
    graceful_shutdown_wait_loop_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="How often a stopping replica checks whether its requests have finished",
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
