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

from deployments.router import Router
from deployments.stages import STAGE_CLASSES
from services.core.config import AppConfig, load_app_config, parse_app_config
from services.core.registry import STAGES


def app_config_from_args(args: dict[str, Any]) -> AppConfig:
    """`{"config": {...}}` (inline) or `{"config_path": "file.yaml"}`; neither = defaults."""
    unknown = set(args) - {"config", "config_path"}
    if unknown:
        raise ValueError(f"unknown app arguments {sorted(unknown)}; use config or config_path")
    if "config" in args and "config_path" in args:
        raise ValueError("give config or config_path, not both")
    if "config_path" in args:
        return load_app_config(args["config_path"])
    return parse_app_config(args.get("config", {}), where="args.config")


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The avatar app: four stage deployments and the router ingress.

    The config is validated here, once; the replicas receive the typed objects (pickled by
    Ray), so a stage's options reach its backend without another parse.
    """
    config = app_config_from_args(args or {})
    return bind_app(config)


def bind_app(config: AppConfig) -> Application:
    """The app graph of an already validated config."""
    handles = {
        stage: serve.deployment(
            STAGE_CLASSES[stage], name=stage, **config.deployment(stage).serve_options()
        ).bind(config.stage(stage))
        for stage in STAGES
    }
    router = serve.deployment(Router, name="router", **config.router.serve.serve_options())
    return router.bind(**handles, config=config)


# For `serve build deployments.app:app` / `serve run deployments.app:app`: the local config.
# (`serve run deployments.app:build_app config_path=FILE` builds from any other file.)
app = build_app({"config_path": str(Path(__file__).parent / "configs" / "local.yaml")})
