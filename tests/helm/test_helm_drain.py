"""Graceful drain lines up in the rendered chart: every Ray pod's terminationGracePeriodSeconds
and the RayService's rayClusterDeletionDelaySeconds (how long the old cluster of a NewCluster
upgrade keeps serving) outlast the longest `graceful_shutdown_timeout_s` of the deployments in
serveConfigV2, so in-flight turns finish before anything is killed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.core.serve_options import DeploymentOptions
from tests.helm.chart import DEPLOYMENTS, PROFILES, only, render, serve_config

DEFAULT_TIMEOUT_S = DeploymentOptions.model_fields["graceful_shutdown_timeout_s"].default
RAY_STOP_MARGIN_S = 30  # the preStop `ray stop` and Serve's proxy draining


def _pods(service: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = service["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [group["template"]["spec"] for group in groups]


def _longest_graceful_s(docs) -> float:
    (app,) = serve_config(docs)["applications"]
    entries = {entry["name"]: entry for entry in app["deployments"]}
    assert set(entries) == set(DEPLOYMENTS)
    return max(e.get("graceful_shutdown_timeout_s", DEFAULT_TIMEOUT_S) for e in entries.values())


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_pods_and_the_old_cluster_outlive_the_graceful_shutdown(helm, profile):
    docs = render(PROFILES[profile])
    longest = _longest_graceful_s(docs)
    service = only(docs, "RayService")
    assert service["spec"]["upgradeStrategy"]["type"] == "NewCluster"
    assert service["spec"]["rayClusterDeletionDelaySeconds"] >= max(60, longest)
    for pod in _pods(service):
        assert pod["terminationGracePeriodSeconds"] >= longest + RAY_STOP_MARGIN_S


def test_the_local_profile_drains_its_turns(helm):
    (app,) = serve_config(render(PROFILES["cpu"]))["applications"]
    router = next(e for e in app["deployments"] if e["name"] == "router")
    assert router["graceful_shutdown_timeout_s"] == 45
    assert router["graceful_shutdown_wait_loop_s"] == 1


def test_a_longer_graceful_timeout_lengthens_the_pods_grace(helm):
    slow = '{"serve": {"num_replicas": 1, "graceful_shutdown_timeout_s": 300.5}}'
    docs = render(PROFILES["cpu"], (f"json:app.config.router={slow}",))
    assert _longest_graceful_s(docs) == 300.5
    service = only(docs, "RayService")
    assert service["spec"]["rayClusterDeletionDelaySeconds"] == 301 + RAY_STOP_MARGIN_S
    assert {pod["terminationGracePeriodSeconds"] for pod in _pods(service)} == {331}


def test_an_unset_timeout_counts_as_serves_default(helm):
    # The chart's fallback (templates/_helpers.tpl) mirrors DeploymentOptions' default.
    blocks = {
        stage: {"backend": "fake", "serve": {"num_replicas": 1, "graceful_shutdown_timeout_s": 1}}
        for stage in ("asr", "llm", "tts", "render")
    }
    sets = tuple(
        f"json:app.config.stages.{stage}={json.dumps(block)}" for stage, block in blocks.items()
    ) + ('json:app.config.router={"serve": {"num_replicas": 1}}',)
    service = only(render(PROFILES["cpu"], sets), "RayService")
    grace = {pod["terminationGracePeriodSeconds"] for pod in _pods(service)}
    assert grace == {int(DEFAULT_TIMEOUT_S) + RAY_STOP_MARGIN_S}
