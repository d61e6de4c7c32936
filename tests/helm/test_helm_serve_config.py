"""serveConfigV2 is a valid Ray Serve config generated from the stage blocks of the values, the
CPU values reproduce deployments/configs/local.yaml, and every stage lands on its own pool with
room to reach its Serve max_replicas (Serve replicas -> Ray workers -> nodes)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.helm.chart import (
    CPU_VALUES,
    DEPLOYMENTS,
    PROFILES,
    REPO,
    STAGES,
    load_values,
    only,
    render,
    serve_config,
)

LOCAL_YAML = REPO / "deployments" / "configs" / "local.yaml"


def _app(profile: str) -> dict[str, Any]:
    (app,) = serve_config(render(PROFILES[profile]))["applications"]
    return app


def _entries(profile: str) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in _app(profile)["deployments"]}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_serve_config_loads_as_ray_serve_schema(helm, profile):
    schema = pytest.importorskip("ray.serve.schema", reason="ray[serve] not installed")
    config = schema.ServeDeploySchema(**serve_config(render(PROFILES[profile])))
    (app,) = config.applications
    assert app.import_path == "deployments.app:build_app"
    assert app.route_prefix == "/"
    assert sorted(d.name for d in app.deployments) == sorted(DEPLOYMENTS)
    assert config.http_options.host == "0.0.0.0"
    assert config.http_options.port == 8000


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_args_and_serve_options_validate_as_app_config(helm, profile):
    from deployments.config import AppConfig, DeploymentOptions

    app = _app(profile)
    assert set(app["args"]) == {"config"}
    config = AppConfig(**app["args"]["config"])
    assert config.name == app["name"]
    # Serve options live in the Serve `deployments` list, not in args: Serve hashes args into
    # the app's code version, so scaling one stage must not restart the others.
    assert "deployments" not in app["args"]["config"]
    for entry in _entries(profile).values():
        options = {key: value for key, value in entry.items() if key != "name"}
        DeploymentOptions(**options)  # raises on any field AppConfig would reject


def test_cpu_values_mirror_local_yaml(helm):
    from deployments.config import AppConfig, DeploymentOptions, load_app_config

    local = load_app_config(LOCAL_YAML)
    app = _app("cpu")
    config = AppConfig(**app["args"]["config"])
    assert config.name == local.name
    assert config.state == local.state
    assert config.limits == local.limits
    assert config.pipeline.turn == local.pipeline.turn
    for stage in STAGES:
        ours, theirs = config.pipeline.stage(stage), local.pipeline.stage(stage)
        assert (ours.backend, ours.options) == (theirs.backend, theirs.options), stage
    for name, entry in _entries("cpu").items():
        options = {key: value for key, value in entry.items() if key != "name"}
        assert options["ray_actor_options"].pop("resources") == {"pool_cpu": 1}
        ours = DeploymentOptions(**options).serve_options()
        assert ours == local.deployments[name].serve_options(), name


def test_cpu_values_file_names_local_yaml(helm):
    assert "deployments/configs/local.yaml" in CPU_VALUES.read_text()


def test_stage_blocks_of_values_yaml_are_the_single_source(helm):
    values = load_values()
    config = _app("default")["args"]["config"]
    entries = _entries("default")
    for name in DEPLOYMENTS:
        block = values["router"] if name == "router" else values["stages"][name]
        if name != "router":
            assert config["pipeline"][name] == {
                "backend": block["backend"],
                "options": block["options"],
            }
        entry = dict(entries[name])
        entry.pop("name")
        resources = entry["ray_actor_options"].pop("resources")
        assert resources == {f"pool_{block['pool']}": 1}
        assert entry == block["serve"], name


def _ray_node_types(profile: str) -> dict[str, dict[str, Any]]:
    """Node types as Ray's own KubeRay autoscaler derives them from the rendered cluster."""
    kuberay = pytest.importorskip(
        "ray.autoscaler._private.kuberay.autoscaling_config", reason="ray not installed"
    )
    rayservice = only(render(PROFILES[profile]), "RayService")
    cluster = {
        "metadata": {"name": "avatar", "namespace": "avatar"},
        "spec": rayservice["spec"]["rayClusterConfig"],
    }
    return kuberay._derive_autoscaling_config_from_ray_cr(cluster)["available_node_types"]


def _demand(entry: dict[str, Any]) -> dict[str, float]:
    actor = entry["ray_actor_options"]
    demand = {"CPU": actor.get("num_cpus", 1), "GPU": actor.get("num_gpus", 0)}
    if actor.get("memory"):
        demand["memory"] = actor["memory"]
    demand.update(actor.get("resources", {}))
    return {key: value for key, value in demand.items() if value}


def _fits(demand: dict[str, float], resources: dict[str, float]) -> bool:
    return all(resources.get(key, 0) >= value for key, value in demand.items())


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_each_deployment_fits_only_its_own_pool(helm, profile):
    node_types = _ray_node_types(profile)
    assert node_types["headgroup"]["resources"].get("CPU", 0) == 0, "replicas must avoid head"
    for name, entry in _entries(profile).items():
        (pool_resource,) = entry["ray_actor_options"]["resources"]
        pool = pool_resource.removeprefix("pool_")
        fitting = [t for t, spec in node_types.items() if _fits(_demand(entry), spec["resources"])]
        assert fitting == [pool], f"{name} fits {fitting}, expected only pool {pool}"


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_pool_max_workers_cover_serve_max_replicas(helm, profile):
    node_types = _ray_node_types(profile)
    needed: dict[str, dict[str, float]] = {}
    for entry in _entries(profile).values():
        (pool_resource,) = entry["ray_actor_options"]["resources"]
        pool = pool_resource.removeprefix("pool_")
        scaling = entry.get("autoscaling_config")
        replicas = scaling["max_replicas"] if scaling else entry["num_replicas"]
        for key, value in _demand(entry).items():
            needed.setdefault(pool, {}).setdefault(key, 0.0)
            needed[pool][key] += replicas * value
    for pool, demand in needed.items():
        capacity = node_types[pool]["resources"]
        nodes = max(math.ceil(round(v / capacity[k], 6)) for k, v in demand.items())
        assert nodes <= node_types[pool]["max_workers"], (
            f"pool {pool}: Serve max replicas need {nodes} workers, maxReplicas is "
            f"{node_types[pool]['max_workers']} ({demand} vs one worker's {capacity})"
        )


def test_gpu_pools_advertise_their_gpus_to_ray(helm):
    node_types = _ray_node_types("default")
    values = load_values()
    for pool, spec in values["pools"].items():
        assert node_types[pool]["resources"].get("GPU", 0) == spec["gpus"], pool
        assert node_types[pool]["resources"][f"pool_{pool}"] == 1000
