"""The chart requires API keys: it serves 0.0.0.0, so an app config whose `auth.mode` is not
`keys` stops `helm template`; a bootstrap admin key reaches the pods only through a Secret."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helm.chart import CPU_VALUES, GPU_VALUES, render, render_error, serve_config


def _containers(docs) -> list[dict[str, Any]]:
    (service,) = [doc for doc in docs if doc["kind"] == "RayService"]
    cluster = service["spec"]["rayClusterConfig"]
    specs = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [c for spec in specs for c in spec["template"]["spec"]["containers"]]


@pytest.mark.parametrize("values", [(), (GPU_VALUES,), (CPU_VALUES,)])
def test_every_shipped_layout_runs_with_keys(helm, values):
    (app,) = serve_config(render(values))["applications"]
    assert app["args"]["config"]["auth"]["mode"] == "keys"


@pytest.mark.parametrize(
    ("values", "sets", "mode"),
    [
        ((), ("app.profile=local", "database.allowPodLocalSqlite=true"), "auto"),
        ((), ('json:app.config.auth={"mode": "open"}',), "open"),
        ((), ('json:app.config.auth={"mode": "open", "allow_open_network": true}',), "open"),
        ((CPU_VALUES,), ('json:app.config.auth={"mode": "auto"}',), "auto"),
    ],
)
def test_a_mode_other_than_keys_stops_helm_template(helm, values, sets, mode):
    error = render_error(values, sets)
    assert "app.config.auth.mode: the chart serves on 0.0.0.0, so it requires API keys" in error
    assert f'not "{mode}"' in error


def test_no_bootstrap_key_by_default(helm):
    for container in _containers(render()):
        names = {env["name"] for env in container.get("env", [])}
        assert "AVATAR_BOOTSTRAP_KEY" not in names


@pytest.mark.parametrize(
    ("sets", "env_name"),
    [
        (("auth.bootstrapKeySecret.name=avatar-admin-key",), "AVATAR_BOOTSTRAP_KEY"),
        (
            (
                "auth.bootstrapKeySecret.name=avatar-admin-key",
                'json:app.config.auth={"mode": "keys", "bootstrap_key_env": "ADMIN_TOKEN"}',
            ),
            "ADMIN_TOKEN",
        ),
    ],
)
def test_bootstrap_key_comes_from_the_secret_as_the_configured_env_var(helm, sets, env_name):
    docs = render((), sets)
    for container in _containers(docs):
        (env,) = [e for e in container["env"] if e["name"] == env_name]
        assert env == {
            "name": env_name,
            "valueFrom": {"secretKeyRef": {"name": "avatar-admin-key", "key": "token"}},
        }
    # The app reads the env var its config names; the token itself lives only in the Secret.
    (app,) = serve_config(docs)["applications"]
    assert app["args"]["config"]["auth"].get("bootstrap_key_env", "AVATAR_BOOTSTRAP_KEY") == (
        env_name
    )
