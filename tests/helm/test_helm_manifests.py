"""Rendered objects are valid Kubernetes: core objects against the API schemas
(`kubernetes-validate`, offline), the RayService against KubeRay's CRD schema (`jsonschema`)."""

from __future__ import annotations

import copy
import functools
from typing import Any

import pytest
import yaml

from tests.helm.chart import KUBERAY_CRDS, PROFILES, only, render

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a recent one.
K8S_VERSIONS = ("1.25.0", "1.33.0")
CRD_GROUPS = {"ray.io", "monitoring.coreos.com"}


def _group(doc: dict[str, Any]) -> str:
    api = doc["apiVersion"]
    return api.split("/")[0] if "/" in api else ""


def _validate_core(doc: dict[str, Any], version: str) -> None:
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate not installed (pip install it)"
    )
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as exc:
        name = f"{doc['kind']}/{doc['metadata'].get('name')}"
        raise AssertionError(f"{name} invalid for Kubernetes {version}: {exc}") from None


def _pod_templates(rayservice: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [group["template"] for group in groups]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_core_objects_match_the_kubernetes_api(helm, profile, version):
    docs = render(PROFILES[profile])
    core = [doc for doc in docs if _group(doc) not in CRD_GROUPS]
    assert core, "expected some core objects"
    for doc in core:
        _validate_core(doc, version)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_embedded_pod_templates_and_service_are_valid(helm, profile):
    rayservice = only(render(PROFILES[profile]), "RayService")
    for template in _pod_templates(rayservice):
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "check"},
            "template": template,
        }
        _validate_core(pod_template, K8S_VERSIONS[-1])
    service = {"apiVersion": "v1", "kind": "Service", **rayservice["spec"]["serveService"]}
    _validate_core(service, K8S_VERSIONS[-1])


def _strict(schema: Any) -> Any:
    """Close every object schema that lists its properties: the API server would silently drop
    an unknown field (a typo), so the test rejects it instead."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@functools.cache
def _crd_validator(kind_file: str, version: str):
    jsonschema = pytest.importorskip("jsonschema")
    crd = yaml.safe_load((KUBERAY_CRDS / kind_file).read_text())
    (spec,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = _strict(copy.deepcopy(spec["schema"]["openAPIV3Schema"]))
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_rayservice_matches_the_kuberay_crd(helm, profile):
    if not (KUBERAY_CRDS / "ray.io_rayservices.yaml").is_file():
        pytest.skip(
            f"KubeRay CRD schemas not found at {KUBERAY_CRDS} (../shared/kuberay-crds beside "
            "the repo; a fresh clone does not have it)"
        )
    rayservice = only(render(PROFILES[profile]), "RayService")
    assert rayservice["apiVersion"] == "ray.io/v1"
    validator = _crd_validator("ray.io_rayservices.yaml", "v1")
    errors = sorted(validator.iter_errors(rayservice), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:10]
    )


def test_the_strict_crd_check_catches_a_typo(helm):
    if not (KUBERAY_CRDS / "ray.io_rayservices.yaml").is_file():
        pytest.skip(f"KubeRay CRD schemas not found at {KUBERAY_CRDS}")
    rayservice = copy.deepcopy(only(render(), "RayService"))
    rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplica"] = 3
    assert not _crd_validator("ray.io_rayservices.yaml", "v1").is_valid(rayservice)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_prometheus_operator_objects_have_their_shape(helm, profile):
    for doc in render(PROFILES[profile]):
        if _group(doc) != "monitoring.coreos.com":
            continue
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        if doc["kind"] == "PodMonitor":
            labels = doc["spec"]["selector"]["matchLabels"]
            assert labels["app.kubernetes.io/instance"] == "avatar"
            ports = [ep["port"] for ep in doc["spec"]["podMetricsEndpoints"]]
            assert "metrics" in ports
        else:
            assert doc["kind"] == "PrometheusRule"
            assert isinstance(doc["spec"]["groups"], list)


def test_metrics_and_serve_ports_are_declared_on_every_ray_pod(helm):
    rayservice = only(render(PROFILES["gpu"]), "RayService")
    for template in _pod_templates(rayservice):
        ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert ports["metrics"] == 8080
        assert ports["serve"] == 8000
