"""`avatar cluster status|scale|rollout` against a loopback stub of the Kubernetes API.

No API server runs here: `KubeStub` serves the chart's real RayService (`helm template`) with a
KubeRay-shaped `.status`, its RayCluster and pods, and the commands reach it through the official
`kubernetes` client (kubeconfig loading, HTTP layer, serialisation, merge-patch content type).
The scaled RayService is checked against KubeRay's CRD schema when ../shared/kuberay-crds exists.
"""

from __future__ import annotations

import copy
import json
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.chart import DEPLOYMENTS, KUBERAY_CRDS, only, render
from tests.helm.kube_stub import (
    CLUSTER_NAME,
    TOKEN,
    KubeStub,
    ray_pod,
    raycluster_for,
    rayservice_status,
)

pytest.importorskip("kubernetes", reason="needs the cluster extra: pip install '.[cluster]'")

from services.commands.main import main  # noqa: E402

NAME = "avatar-avatar-serve"
UNSCHEDULABLE = (
    "0/3 nodes are available: 1 node(s) had untolerated taint {pool: router}, "
    "2 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available."
)
LLM_STUCK = (
    "Deployment 'llm' in application 'avatar' has 1 replicas that have taken more than 30s to "
    "be scheduled. This may be due to waiting for the cluster to auto-scale."
)


def _rayservice(helm: str) -> dict[str, Any]:
    rayservice = copy.deepcopy(only(render(), "RayService"))
    rayservice["metadata"].update(namespace="avatar", generation=3, resourceVersion="4711")
    return rayservice


def _healthy(stub: KubeStub, rayservice: dict[str, Any]) -> None:
    rayservice["status"] = rayservice_status(rayservice)
    stub.add(rayservice)
    stub.add(raycluster_for(rayservice, {}))
    groups = [g["groupName"] for g in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]]
    stub.pods[:] = [ray_pod(f"{CLUSTER_NAME}-head-8xq2l", "headgroup")] + [
        ray_pod(f"{CLUSTER_NAME}-{g}-worker-a1", g) for g in groups
    ]


def _degrade(stub: KubeStub, rayservice: dict[str, Any]) -> None:
    """The LLM stage wants a second replica; its new worker pod finds no GPU node."""
    rayservice["status"] = rayservice_status(
        rayservice,
        app_status="DEPLOYING",
        deployments={"llm": ("UPDATING", LLM_STUCK)},
        observed_generation=rayservice["metadata"]["generation"],
        extra_workers=1,
    )
    stub.add(raycluster_for(rayservice, {"llm": 2}))
    stub.pods.append(
        ray_pod(
            f"{CLUSTER_NAME}-llm-worker-b2", "llm", phase="Pending", unschedulable=UNSCHEDULABLE
        )
    )


@pytest.fixture
def stub(helm):
    kube = KubeStub()
    _healthy(kube, _rayservice(helm))
    kube.start()
    yield kube
    kube.stop()


def _kubeconfig(tmp_path: Path, server: str) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "stub", "cluster": {"server": server}}],
                "users": [{"name": "stub", "user": {"token": TOKEN}}],
                "contexts": [
                    {
                        "name": "stub",
                        "context": {"cluster": "stub", "user": "stub", "namespace": "avatar"},
                    },
                    {
                        "name": "other",
                        "context": {"cluster": "stub", "user": "stub", "namespace": "elsewhere"},
                    },
                ],
                "current-context": "stub",
            }
        )
    )
    return str(path)


@pytest.fixture
def avatar(stub, tmp_path, capsys):
    """Run `avatar cluster ...` against the stub: (exit status, stdout, stderr)."""
    kubeconfig = _kubeconfig(tmp_path, stub.url)

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["cluster", *args, "--kubeconfig", kubeconfig])
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return run


def _rayservice_of(stub: KubeStub) -> dict[str, Any]:
    return stub.objects[("rayservices", NAME)]


def _deployment(rayservice: dict[str, Any], name: str) -> dict[str, Any]:
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    (entry,) = [d for d in config["applications"][0]["deployments"] if d["name"] == name]
    return entry


def test_status_of_a_healthy_cluster(stub, avatar):
    code, out, _ = avatar("status")
    assert code == 0
    assert out.startswith(f"RayService avatar/{NAME}: healthy")
    assert "Serve app avatar: RUNNING" in out
    for name in DEPLOYMENTS:
        assert any(line.split()[:2] == [name, "HEALTHY"] for line in out.splitlines())
    assert f"RayCluster {CLUSTER_NAME}: state ready" in out and "head ready" in out
    assert "Pending pods" not in out and "Problems" not in out
    # name found by the chart's label, namespace from the kubeconfig context, pods by cluster label
    (listing, *_) = stub.calls("GET")
    assert listing.query["labelSelector"] == ["app.kubernetes.io/name=avatar-serve"]
    pods = [r for r in stub.requests if r.path == "/api/v1/namespaces/avatar/pods"]
    assert pods[0].query["labelSelector"] == [f"ray.io/cluster in ({CLUSTER_NAME})"]


def test_status_of_a_degraded_cluster_with_a_pending_pod(stub, avatar):
    _degrade(stub, _rayservice_of(stub))
    code, out, _ = avatar("status")
    assert code == 0
    assert "NOT healthy" in out
    assert "Serve app avatar: DEPLOYING" in out
    assert f"llm        UPDATING  {LLM_STUCK}" in out
    assert "Pending pods (1):" in out
    assert f"{CLUSTER_NAME}-llm-worker-b2 [llm] Unschedulable: {UNSCHEDULABLE}" in out
    llm_row = next(
        line.split()
        for line in out.splitlines()
        if line.split()[:1] == ["llm"] and line.split()[1].isdigit()
    )
    assert llm_row == ["llm", "1", "2", "1", "4", "1"]  # ready desired min max pending

    code, out, _ = avatar("status", "--json")
    report = json.loads(out)
    assert code == 0 and report["healthy"] is False
    assert "app avatar: DEPLOYING" in report["problems"] and "llm: UPDATING" in report["problems"]
    (pod,) = report["pending_pods"]
    assert pod == {
        "name": f"{CLUSTER_NAME}-llm-worker-b2",
        "group": "llm",
        "reason": "Unschedulable",
        "message": UNSCHEDULABLE,
    }
    groups = {g["name"]: g for g in report["cluster"]["groups"]}
    # desired comes from the RayCluster (the autoscaler's count), bounds from its spec
    assert groups["llm"] == {
        "name": "llm",
        "ready": 1,
        "desired": 2,
        "min": 1,
        "max": 4,
        "pending": 1,
    }
    assert report["cluster"]["spec_from"] == "RayCluster"


def test_status_through_a_plain_client_configuration(stub):
    from kubernetes import client

    from services.commands.cluster import Cluster

    configuration = client.Configuration(host=stub.url)
    configuration.api_key = {"BearerToken": TOKEN}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    summary = Cluster(client.ApiClient(configuration), "avatar", NAME).summary()
    assert summary["healthy"] is True
    assert [d["name"] for d in summary["applications"][0]["deployments"]] == sorted(DEPLOYMENTS)


def test_scale_to_fixed_replicas_sends_a_merge_patch(stub, avatar):
    before = copy.deepcopy(_rayservice_of(stub))
    code, out, _ = avatar("scale", "llm", "--replicas", "3", "--name", NAME, "-n", "avatar")
    assert code == 0, out
    auto = _deployment(before, "llm")["autoscaling_config"]
    change = f"avatar/llm: autoscaling {auto['min_replicas']}..{auto['max_replicas']} -> "
    assert change + "num_replicas 3" in out
    assert "next `helm upgrade` sets it from the values again (app.config.stages.llm.serve)" in out
    (patch,) = stub.calls("PATCH")
    assert patch.path == f"/apis/ray.io/v1/namespaces/avatar/rayservices/{NAME}"
    assert patch.headers["Content-Type"] == "application/merge-patch+json"
    assert set(patch.body) == {"metadata", "spec"} and set(patch.body["spec"]) == {"serveConfigV2"}
    after = _rayservice_of(stub)
    llm = _deployment(after, "llm")
    assert llm["num_replicas"] == 3 and "autoscaling_config" not in llm
    assert llm["ray_actor_options"] == _deployment(before, "llm")["ray_actor_options"]
    for name in set(DEPLOYMENTS) - {"llm"}:
        assert _deployment(after, name) == _deployment(before, name)
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert after["spec"]["rayClusterConfig"] == before["spec"]["rayClusterConfig"]


def test_scale_autoscaling_bounds_keeps_the_other_knobs(stub, avatar):
    before = _deployment(_rayservice_of(stub), "render")["autoscaling_config"]
    code, out, _ = avatar("scale", "render", "--min", "2", "--max", "12")
    assert code == 0
    after = _deployment(_rayservice_of(stub), "render")["autoscaling_config"]
    assert after == {**before, "min_replicas": 2, "max_replicas": 12}
    code, _, _ = avatar("scale", "router", "--max", "6")
    assert code == 0
    router = _deployment(_rayservice_of(stub), "router")["autoscaling_config"]
    assert (router["min_replicas"], router["max_replicas"]) == (2, 6)


def test_scaled_rayservice_matches_the_kuberay_crd(stub, avatar):
    if not (KUBERAY_CRDS / "ray.io_rayservices.yaml").is_file():
        pytest.skip(
            f"KubeRay CRD schemas not found at {KUBERAY_CRDS} (../shared/kuberay-crds beside "
            "the repo; a fresh clone does not have it)"
        )
    from tests.helm.test_helm_manifests import _crd_validator

    _degrade(stub, _rayservice_of(stub))  # a status with messages and a pending cluster state
    assert avatar("scale", "tts", "--replicas", "2")[0] == 0
    assert avatar("scale", "asr", "--min", "0", "--max", "3")[0] == 0
    # The whole object, status included: the stub's status is KubeRay's shape (strict schema:
    # an unknown field fails). The RayCluster's spec and status are copies of parts checked here.
    errors = list(_crd_validator("ray.io_rayservices.yaml", "v1").iter_errors(_rayservice_of(stub)))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]
    assert _deployment(_rayservice_of(stub), "tts")["num_replicas"] == 2
    assert _deployment(_rayservice_of(stub), "asr")["autoscaling_config"]["min_replicas"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("gpu", "--replicas", "2"), "unknown stage 'gpu'; valid: asr, llm, tts, render, router"),
        (("llm", "--replicas", "0"), "--replicas must be >= 1, got 0"),
        (("llm", "--max", "0"), "--max must be >= 1, got 0"),
        (("llm",), "give --replicas N, or --min and/or --max"),
        (("llm", "--replicas", "2", "--min", "1"), "give --replicas N, or --min and/or --max"),
        (("llm", "--min", "5", "--max", "2"), "llm: autoscaling_config: Value error, min_replicas"),
        (("llm", "--min", "999"), "llm: autoscaling_config: Value error, min_replicas (999) >"),
        (("llm", "--replicas", "5000"), "llm: num_replicas: Input should be less than or equal"),
        (("llm", "--replicas", "2", "--app", "other"), "expected app 'other'; apps: avatar"),
    ],
)
def test_scale_rejects_bad_input_without_patching(stub, avatar, args, message):
    code, out, err = avatar("scale", *args)
    assert code == 2 and out == ""
    assert err.startswith("avatar: error: ") and message in err, err
    assert stub.calls("PATCH") == []


def test_scale_refuses_to_overwrite_a_concurrent_change(stub, avatar):
    def someone_else_edits(kube: KubeStub, plural: str, name: str) -> None:
        meta = kube.objects[(plural, name)]["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)

    stub.on_get = someone_else_edits
    code, _, err = avatar("scale", "llm", "--replicas", "2")
    assert code == 2 and "changed by someone else meanwhile" in err


def test_missing_rayservice_and_bad_connections_are_one_line(stub, avatar, tmp_path, capsys):
    code, _, err = avatar("status", "--name", "nope")
    assert code == 2
    assert (
        err == 'avatar: error: RayService avatar/nope not found: rayservices.ray.io "nope" '
        "not found\n"
    )
    code, _, err = avatar("status", "--context", "other")
    assert code == 2 and "no avatar-serve RayService in namespace elsewhere: give --name" in err
    code, _, err = avatar("status", "--context", "missing")
    assert code == 2 and "kubeconfig" in err and "missing" in err

    wrong_token = Path(_kubeconfig(tmp_path, stub.url))
    wrong_token.write_text(wrong_token.read_text().replace(TOKEN, "expired"))
    assert main(["cluster", "status", "--kubeconfig", str(wrong_token)]) == 2
    assert capsys.readouterr().err.startswith(
        "avatar: error: RayServices in namespace avatar: HTTP 401: Unauthorized"
    )
    code, _, err = avatar("rollout", "--interval", "0")
    assert code == 2 and "--interval must be > 0 seconds, got 0" in err

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    code = main(["cluster", "status", "--kubeconfig", _kubeconfig(tmp_path, closed)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"avatar: error: Kubernetes API {closed} unreachable")


def test_no_credentials_at_all(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["cluster", "status"]) == 2
    err = capsys.readouterr().err
    assert "no Kubernetes credentials" in err and "Traceback" not in err


def test_rollout_returns_when_the_operator_reports_healthy(stub, avatar):
    rayservice = _rayservice_of(stub)
    _degrade(stub, rayservice)
    rayservice["status"]["observedGeneration"] = rayservice["metadata"]["generation"] - 1
    polls = []

    def operator(kube: KubeStub, plural: str, name: str) -> None:
        if plural == "rayservices":
            polls.append(name)
            if len(polls) == 3:  # reconciled, the new replica scheduled and healthy
                _healthy(kube, rayservice)

    stub.on_get = operator
    code, out, _ = avatar("rollout", "--interval", "0.05", "--timeout", "30")
    assert code == 0
    waiting = [line for line in out.splitlines() if "waiting:" in line]
    assert len(waiting) >= 2
    assert "operator has not reconciled generation 3 (observed 2)" in waiting[0]
    assert out.splitlines()[-1].endswith("every deployment HEALTHY")


def test_rollout_times_out_with_what_it_waited_for(stub, avatar):
    _degrade(stub, _rayservice_of(stub))
    code, out, err = avatar("rollout", "--interval", "0.1", "--timeout", "1")
    assert code == 2
    assert "waiting: app avatar: DEPLOYING; llm: UPDATING" in out
    assert err == (
        f"avatar: error: rollout of RayService avatar/{NAME} not done after 1s: "
        "app avatar: DEPLOYING; llm: UPDATING\n"
    )


def test_scale_then_wait(stub, avatar):
    def operator(kube: KubeStub, plural: str, name: str) -> None:
        obj = kube.objects[(plural, name)]
        if plural == "rayservices" and kube.calls("PATCH"):
            obj["status"]["observedGeneration"] = obj["metadata"]["generation"]

    stub.on_get = operator
    code, out, _ = avatar("scale", "tts", "--replicas", "2", "--wait", "--interval", "0.05")
    assert code == 0 and "rollout of" in out and "generation 4 served" in out
