"""The app is `serve build`-compatible: the same config becomes a Serve (and KubeRay) config."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

pytestmark = pytest.mark.serve


def test_serve_build_emits_every_deployment_with_config_options(tmp_path):
    from ray.serve.schema import ServeDeploySchema

    from services.core.config import load_app_config

    out = tmp_path / "serve.yaml"
    serve = [sys.executable, "-c", "from ray.serve.scripts import cli; cli()"]
    result = subprocess.run(
        [*serve, "build", "deployments.app:app", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    schema = ServeDeploySchema(**yaml.safe_load(out.read_text()))
    deployments = {d.name: d for d in schema.applications[0].deployments}
    assert set(deployments) == {"asr", "llm", "tts", "render", "router"}
    local = load_app_config("deployments/configs/local.yaml")
    for name, built in deployments.items():
        expected = local.deployment(name).serve_options()
        assert built.max_ongoing_requests == expected["max_ongoing_requests"]
        assert built.max_queued_requests == expected["max_queued_requests"]
        assert built.ray_actor_options.num_cpus == expected["ray_actor_options"]["num_cpus"]
