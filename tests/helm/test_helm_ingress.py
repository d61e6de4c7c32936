"""`http.ingress` of the rendered app config reaches every Ray container as the env Serve reads
when Ray starts: HAProxy + direct ingress for `haproxy` (gpu.yaml), Ray's proxy otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helm.chart import PROFILES, only, render, serve_config

FLAGS = ("RAY_SERVE_ENABLE_DIRECT_INGRESS", "RAY_SERVE_ENABLE_HA_PROXY")


def _ray_env(docs) -> list[dict[str, str]]:
    """Per Ray container (head and every worker group): the two ingress flags."""
    cluster = only(docs, "RayService")["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    envs = []
    for group in groups:
        (container,) = group["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        envs.append({flag: env.get(flag) for flag in FLAGS})
    return envs


def _ingress(docs) -> Any:
    (app,) = serve_config(docs)["applications"]
    return app["args"]["config"]["http"].get("ingress", "proxy")


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_ray_container_gets_the_configs_ingress(helm, profile):
    docs = render(PROFILES[profile])
    on = "1" if _ingress(docs) == "haproxy" else "0"
    assert _ray_env(docs) and all(env == dict.fromkeys(FLAGS, on) for env in _ray_env(docs))


def test_gpu_profile_serves_through_haproxy_and_it_can_be_switched_off(helm):
    assert _ingress(render(PROFILES["gpu"])) == "haproxy"
    docs = render(PROFILES["gpu"], ('json:app.config.http={"host": "0.0.0.0", "port": 8000}',))
    assert _ingress(docs) == "proxy"
    assert all(env == dict.fromkeys(FLAGS, "0") for env in _ray_env(docs))
