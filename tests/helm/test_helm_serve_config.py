"""serveConfigV2 is a valid Ray Serve config rendered from one app config file: the chart's
GPU and CPU values reproduce deployments/configs/gpu.yaml and local.yaml exactly (personas and
storage included), `app.config` replaces whole sections, and every stage lands on its own pool
with room to reach its Serve max_replicas (Serve replicas -> Ray workers -> nodes)."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
import yaml

from tests.helm.chart import (
    CHART,
    CPU_VALUES,
    DEPLOYMENTS,
    GPU_VALUES,
    PROFILES,
    REPO,
    load_values,
    only,
    render,
    serve_config,
)

CONFIGS = REPO / "deployments" / "configs"


def _app(profile: str, sets: tuple[str, ...] = ()) -> dict[str, Any]:
    (app,) = serve_config(render(PROFILES[profile], sets))["applications"]
    return app


def _entries(profile: str, sets: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in _app(profile, sets)["deployments"]}


def rebuilt_app_config(app: dict[str, Any]) -> dict[str, Any]:
    """The app config a rendered Serve app stands for: `args.config` with each deployment's
    Serve options put back where the config file keeps them (less the chart's pool resource)."""
    config = copy.deepcopy(app["args"]["config"])
    for entry in app["deployments"]:
        serve = {key: value for key, value in entry.items() if key != "name"}
        actor = serve["ray_actor_options"]
        actor["resources"] = {
            k: v for k, v in actor["resources"].items() if not k.startswith("pool_")
        }
        if not actor["resources"]:
            del actor["resources"]
        if entry["name"] == "router":
            config["router"] = {"serve": serve}
        else:
            config["stages"][entry["name"]]["serve"] = serve
    return config


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
    from services.core.config import parse_app_config
    from services.core.serve_options import DeploymentOptions

    app = _app(profile)
    assert set(app["args"]) == {"config"}
    config = parse_app_config(app["args"]["config"])
    assert config.name == app["name"]
    # Serve options live in the Serve `deployments` list, not in args: Serve hashes args into
    # the app's code version, so scaling one stage must not restart the others.
    assert "router" not in app["args"]["config"]
    assert all("serve" not in block for block in app["args"]["config"]["stages"].values())
    for entry in _entries(profile).values():
        options = {key: value for key, value in entry.items() if key != "name"}
        DeploymentOptions(**options)  # raises on any field AppConfig would reject
    parse_app_config(rebuilt_app_config(app))


@pytest.mark.parametrize(
    ("profile", "config_file"),
    [("gpu", "gpu.yaml"), ("default", "gpu.yaml"), ("cpu", "local.yaml")],
)
def test_rendered_app_config_equals_the_config_file(helm, profile, config_file):
    """The chart adds nothing and drops nothing: `personas`, `storage`, every option. (The CPU
    values replace local.yaml's `auth` section: its `auto` would run open on loopback, and the
    chart requires keys.)"""
    expected = yaml.safe_load((CONFIGS / config_file).read_text())
    if profile == "cpu":
        assert expected["auth"] == {"mode": "auto"}
        expected["auth"] = load_values(CPU_VALUES)["app"]["config"]["auth"]
        assert expected["auth"] == {"mode": "keys"}
    assert rebuilt_app_config(_app(profile)) == expected


def test_chart_reads_the_config_files_themselves_not_copies(helm):
    link = CHART / "files" / "configs"
    assert link.is_symlink() and link.resolve() == CONFIGS.resolve()
    assert "profile: local" in CPU_VALUES.read_text()
    assert "profile: gpu" in GPU_VALUES.read_text()
    assert load_values()["app"]["profile"] == "gpu"


def test_app_config_sections_replace_the_profiles_whole_section(helm):
    persona = {"default": "maya-castellan", "index_dir": "/models/index", "embedder": "minilm"}
    render_block = {"backend": "fake", "options": {"width": 64}}
    sets = (
        "json:app.config.personas=" + json.dumps(persona),
        "json:app.config.stages.render=" + json.dumps(render_block),
    )
    config = _app("gpu", sets)["args"]["config"]
    assert config["personas"] == persona
    # The GPU profile's head3d options (msaa, fps) are gone with the block, not merged in.
    assert config["stages"]["render"] == render_block
    assert config["stages"]["llm"]["backend"] == "trtllm"  # other stages untouched
    render_entry = _entries("gpu", sets)["render"]
    assert render_entry["ray_actor_options"]["resources"] == {"pool_render": 1}


def test_each_deployment_claims_its_placement_pool(helm):
    values = load_values()
    for name, entry in _entries("default").items():
        resources = entry["ray_actor_options"]["resources"]
        assert resources == {f"pool_{values['app']['placement'][name]}": 1}, name
    for entry in _entries("cpu").values():
        assert entry["ray_actor_options"]["resources"] == {"pool_cpu": 1}


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


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_models_joined_from_package_pieces_land_on_the_model_volume(helm, profile):
    # services/persona/model_parts.py reads AVATAR_MODEL_DIR: the persona embedder (420 MB) is
    # joined there once per volume instead of into each container's home.
    values = load_values()
    cluster = only(render(PROFILES[profile]), "RayService")["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        (container,) = group["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert env["AVATAR_MODEL_DIR"] == f"{values['modelCache']['mountPath']}/avatar"
        assert env["AVATAR_MODEL_DIR"].startswith(mounts["models"] + "/")
