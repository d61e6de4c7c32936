"""values.schema.json stays in sync with the app (backend names, AppConfig field bounds) and
rejects bad values with a message that names the key."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.helm.chart import CHART, CPU_VALUES, run_helm, template_args, value_args

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
BOUND_KEYS = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
)


def _definitions_and_models():
    from deployments.config import (
        ApiLimits,
        AutoscalingConfig,
        DeploymentOptions,
        RayActorOptions,
        StateOptions,
    )
    from services.config import TurnSettings

    return {
        "autoscalingConfig": AutoscalingConfig,
        "rayActorOptions": RayActorOptions,
        "deploymentOptions": DeploymentOptions,
        "turnSettings": TurnSettings,
        "stateOptions": StateOptions,
        "apiLimits": ApiLimits,
    }


def test_backend_enums_equal_the_registry():
    from services.registry import BACKENDS

    stages = SCHEMA["properties"]["stages"]["properties"]
    assert set(stages) == set(BACKENDS)
    for stage, backends in BACKENDS.items():
        assert stages[stage]["properties"]["backend"]["enum"] == sorted(backends), stage


def _pydantic_field(prop: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(the non-null branch, nullable) of a pydantic JSON-schema property."""
    if "anyOf" in prop:
        branches = [b for b in prop["anyOf"] if b.get("type") != "null"]
        return branches[0], len(branches) < len(prop["anyOf"])
    return prop, False


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


@pytest.mark.parametrize("definition", sorted(_definitions_and_models()))
def test_schema_bounds_equal_app_config_fields(definition):
    model = _definitions_and_models()[definition]
    ours = SCHEMA["definitions"][definition]
    theirs = model.model_json_schema()["properties"]
    assert ours["additionalProperties"] is False
    assert set(ours["properties"]) == set(theirs), f"{definition} fields differ from {model}"
    for name, prop in theirs.items():
        field, nullable = _pydantic_field(prop)
        mine = ours["properties"][name]
        where = f"{definition}.{name}"
        if "$ref" in field:
            refs = [mine.get("$ref")] + [b.get("$ref") for b in mine.get("anyOf", [])]
            target = _ref_name(field["$ref"])
            assert any(r and _ref_name(r).lower() == target.lower() for r in refs), where
            continue
        types = mine["type"] if isinstance(mine["type"], list) else [mine["type"]]
        assert field["type"] in types, where
        assert ("null" in types) == nullable, where
        for key in BOUND_KEYS:
            assert mine.get(key) == field.get(key), f"{where}: {key}"
        assert mine.get("enum") == field.get("enum"), where


def _lint(*sets: str) -> str:
    proc = run_helm("lint", str(CHART), *value_args((), sets))
    assert proc.returncode != 0, f"helm lint accepted {sets}"
    return proc.stdout + proc.stderr


def _template_error(*sets: str, values=()) -> str:
    proc = run_helm(*template_args(tuple(values), sets))
    assert proc.returncode != 0, f"helm template accepted {sets}"
    return proc.stderr


def _names(output: str, where: str) -> bool:
    """Whether a schema error names the key: helm 4 prints /a/b/c, helm 3 prints a.b.c."""
    return where in output or f"{where.strip('/').replace('/', '.')}:" in output


def test_unknown_backend_is_rejected_with_the_valid_names(helm):
    for output in (_lint("stages.llm.backend=gpt9"), _template_error("stages.llm.backend=gpt9")):
        assert _names(output, "/stages/llm/backend")
        assert re.search(r"one of.*fake.*llama_cpp", output), output


@pytest.mark.parametrize(
    ("sets", "where"),
    [
        (
            ("stages.asr.serve.autoscaling_config=null", "stages.asr.serve.num_replicas=-1"),
            "/stages/asr/serve/num_replicas",
        ),
        (("pools.llm.minReplicas=-1",), "/pools/llm/minReplicas"),
        (("pools.llm.maxReplicas=0",), "/pools/llm/maxReplicas"),
        (
            ("stages.tts.serve.autoscaling_config.max_replicas=-3",),
            "/stages/tts/serve/autoscaling_config/max_replicas",
        ),
        (
            ("json:stages.render.serve.ray_actor_options.num_gpus=-0.5",),
            "/stages/render/serve/ray_actor_options/num_gpus",
        ),
        (("stages.llm.serve.max_ongoing_request=4",), "/stages/llm/serve"),
        (("json:pools.llm.gpus=1.5",), "/pools/llm/gpus"),
        (("app.turn.max_tokens=4",), "/app/turn/max_tokens"),
    ],
)
def test_schema_rejects_bad_values(helm, sets, where):
    assert _names(_lint(*sets), where)
    assert _names(_template_error(*sets), where)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("stages.llm.pool=gpu",), 'stages.llm.pool: pool "gpu" is not defined or not enabled'),
        (("pools.llm.enabled=false",), 'stages.llm.pool: pool "llm" is not defined'),
        (("stages.llm.serve.num_replicas=2",), "stages.llm.serve: set num_replicas or"),
        (
            ("stages.tts.serve.autoscaling_config.min_replicas=9",),
            "stages.tts.serve.autoscaling_config: min_replicas (9) > max_replicas (8)",
        ),
        (
            ("json:router.serve.ray_actor_options.num_gpus=0.5",),
            "router.serve.ray_actor_options.num_gpus (0.5) exceeds the GPUs of one pod of pool",
        ),
        (("pools.speech.replicas=7",), "pools.speech: need minReplicas (1) <= replicas (7)"),
    ],
)
def test_cross_field_errors_stop_helm_template(helm, sets, message):
    assert message in _template_error(*sets)


def test_gpu_stage_on_the_cpu_pool_is_rejected(helm):
    error = _template_error("stages.llm.serve.ray_actor_options.num_gpus=1", values=(CPU_VALUES,))
    assert 'exceeds the GPUs of one pod of pool "cpu"' in error
