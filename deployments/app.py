"""Build the Ray Serve application from one `AppConfig`.

`build_app` is a Serve app builder, so the same config runs with `avatar serve`, with
`serve run deployments.app:build_app config_path=...`, and inside a KubeRay `serveConfigV2`
(`import_path: deployments.app:build_app`, `args: {config: {...}}`). Every Serve option comes
from the config: nothing is hard-coded in decorators.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application

from deployments.config import STAGES, AppConfig, load_app_config
from deployments.router import Router
from deployments.stages import STAGE_CLASSES


def app_config_from_args(args: dict[str, Any]) -> AppConfig:
    """`{"config": {...}}` (inline) or `{"config_path": "file.yaml"}`; neither = defaults."""
    unknown = set(args) - {"config", "config_path"}
    if unknown:
        raise ValueError(f"unknown app arguments {sorted(unknown)}; use config or config_path")
    if "config" in args and "config_path" in args:
        raise ValueError("give config or config_path, not both")
    if "config_path" in args:
        return load_app_config(args["config_path"])
    return AppConfig(**args.get("config", {}))


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The avatar app: four stage deployments and the router ingress."""
    config = app_config_from_args(args or {})
    handles = {
        stage: serve.deployment(
            STAGE_CLASSES[stage], name=stage, **config.deployments[stage].serve_options()
        ).bind(config.pipeline.stage(stage).model_dump())
        for stage in STAGES
    }
    router = serve.deployment(Router, name="router", **config.deployments["router"].serve_options())
    return router.bind(**handles, config=config.model_dump(mode="json"))


# For `serve build deployments.app:app` / `serve run deployments.app:app`: the local config.
# (`serve run deployments.app:build_app config_path=FILE` builds from any other file.)
app = build_app({"config_path": str(Path(__file__).parent / "configs" / "local.yaml")})
