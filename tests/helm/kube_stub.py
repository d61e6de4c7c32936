"""A loopback stand-in for the few Kubernetes API paths `avatar cluster` calls, and its objects.

No API server can run on these machines, so `KubeStub` (http.server on 127.0.0.1, a free port)
answers exactly what the commands ask through the official client: list/get/merge-patch of
`ray.io/v1` rayservices and get of rayclusters, and the pod list with a label selector. It keeps
the API server's rules that matter here: a bearer token is required, PATCH must be
`application/merge-patch+json` (RFC 7386 applied to the stored object), a stale
`metadata.resourceVersion` is a 409, and a spec change bumps `metadata.generation` while the
status (a subresource) stays as it was. Every request is recorded for the tests to inspect.

The objects start from the chart's real RayService (`helm template`); `rayservice_status`,
`raycluster_for` and `ray_pod` add what KubeRay and the kubelet would report.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

TOKEN = "stub-token"
CLUSTER_NAME = "avatar-avatar-serve-raycluster-x7k2p"
_CUSTOM = re.compile(
    r"^/apis/ray\.io/v1/namespaces/([^/]+)/(rayservices|rayclusters)(?:/([^/]+))?$"
)
_PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any = None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _matches(labels: dict[str, str], selector: str) -> bool:
    """Equality (`k=v`) and set (`k in (a,b)`) label selectors, comma-joined."""
    for term in re.findall(r"[^,(]+\([^)]*\)|[^,]+", selector):
        term = term.strip()
        if found := re.fullmatch(r"(\S+)\s+in\s+\(([^)]*)\)", term):
            if labels.get(found[1]) not in {v.strip() for v in found[2].split(",")}:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key.rstrip("=")) != value.lstrip("="):
                return False
    return True


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass
class KubeStub:
    """Objects by (plural, name) in one namespace, served on 127.0.0.1 while started."""

    namespace: str = "avatar"
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    # Called with (stub, plural, name) once a named GET's answer is taken: lets a test move the
    # "operator" forward (flip a status, bump a resourceVersion) between the client's calls.
    on_get: Callable[[KubeStub, str, str], None] | None = None

    def add(self, obj: dict[str, Any]) -> None:
        plural = obj["kind"].lower() + "s"
        obj["metadata"].setdefault("namespace", self.namespace)
        obj["metadata"].setdefault("generation", 1)
        obj["metadata"].setdefault("resourceVersion", "1000")
        self.objects[(plural, obj["metadata"]["name"])] = obj

    def start(self) -> str:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                stub._handle(self, "GET")

            def do_PATCH(self) -> None:
                stub._handle(self, "PATCH")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def calls(self, method: str) -> list[Request]:
        return [r for r in self.requests if r.method == method]

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        request = Request(
            method,
            url.path,
            parse_qs(url.query),
            dict(handler.headers.items()),
            json.loads(raw) if raw else None,
        )
        self.requests.append(request)
        code, body = self._answer(request)
        data = json.dumps(body).encode()
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _answer(self, request: Request) -> tuple[int, dict[str, Any]]:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return 401, _status(401, "Unauthorized", "Unauthorized")
        selector = request.query.get("labelSelector", [""])[0]
        if pods := _PODS.match(request.path):
            items = [p for p in self.pods if _matches(p["metadata"].get("labels", {}), selector)]
            if pods[1] != self.namespace:
                items = []
            return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}
        custom = _CUSTOM.match(request.path)
        if custom is None:
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        namespace, plural, name = custom.groups()
        here = namespace == self.namespace
        if name is None and request.method == "GET":
            items = [
                o
                for (p, _), o in self.objects.items()
                if here and p == plural and _matches(o["metadata"].get("labels", {}), selector)
            ]
            return 200, {"apiVersion": "ray.io/v1", "kind": "List", "metadata": {}, "items": items}
        obj = self.objects.get((plural, name)) if here else None
        if obj is None:
            return 404, _status(404, "NotFound", f'{plural}.ray.io "{name}" not found')
        if request.method == "GET":
            answer = copy.deepcopy(obj)
            if self.on_get is not None:
                self.on_get(self, plural, name)
            return 200, answer
        return self._patch(obj, request)

    def _patch(self, obj: dict[str, Any], request: Request) -> tuple[int, dict[str, Any]]:
        content_type = request.headers.get("Content-Type", "")
        if content_type != "application/merge-patch+json":
            return 415, _status(415, "UnsupportedMediaType", f"unsupported {content_type!r}")
        wanted = (request.body.get("metadata") or {}).get("resourceVersion")
        meta = obj["metadata"]
        if wanted is not None and wanted != meta["resourceVersion"]:
            return 409, _status(409, "Conflict", "the object has been modified; please retry")
        patched = merge_patch(obj, {k: v for k, v in request.body.items() if k != "status"})
        patched["status"] = obj.get("status")
        if patched.get("spec") != obj.get("spec"):
            patched["metadata"]["generation"] = meta["generation"] + 1
        patched["metadata"]["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        obj.clear()
        obj.update(patched)
        return 200, obj


def deployment_names(rayservice: dict[str, Any]) -> list[str]:
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    return [d["name"] for d in config["applications"][0]["deployments"]]


def rayservice_status(
    rayservice: dict[str, Any],
    *,
    deployments: dict[str, tuple[str, str]] | None = None,
    app_status: str = "RUNNING",
    observed_generation: int | None = None,
    ready_workers: int = 4,
    extra_workers: int = 0,
) -> dict[str, Any]:
    """A KubeRay v1 `.status`: every deployment HEALTHY unless `deployments` says otherwise.

    `extra_workers`: workers the autoscaler asked for beyond the spec's `replicas`."""
    statuses = {name: {"status": "HEALTHY"} for name in deployment_names(rayservice)}
    for name, (status, message) in (deployments or {}).items():
        statuses[name] = {"status": status, "message": message}
    ready = app_status == "RUNNING" and all(s["status"] == "HEALTHY" for s in statuses.values())
    groups = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    now = "2025-01-01T12:00:00Z"
    return {
        "serviceStatus": "Running" if ready else "",
        "numServeEndpoints": 3,
        "observedGeneration": observed_generation or rayservice["metadata"].get("generation", 1),
        "lastUpdateTime": now,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "NonZeroServeEndpoints",
                "message": "Number of serve endpoints is greater than 0",
                "lastTransitionTime": now,
                "observedGeneration": 1,
            },
            {
                "type": "UpgradeInProgress",
                "status": "False",
                "reason": "NoPendingCluster",
                "message": "Active Ray cluster exists and no pending Ray cluster",
                "lastTransitionTime": now,
                "observedGeneration": 1,
            },
        ],
        "activeServiceStatus": {
            "rayClusterName": CLUSTER_NAME,
            "applicationStatuses": {
                "avatar": {"status": app_status, "serveDeploymentStatuses": statuses}
            },
            "rayClusterStatus": {
                "state": "ready",
                "readyWorkerReplicas": ready_workers,
                "availableWorkerReplicas": ready_workers,
                "desiredWorkerReplicas": sum(g["replicas"] for g in groups) + extra_workers,
                "minWorkerReplicas": sum(g["minReplicas"] for g in groups),
                "maxWorkerReplicas": sum(g["maxReplicas"] for g in groups),
                "desiredCPU": "14",
                "desiredGPU": "3",
                "lastUpdateTime": now,
                "head": {"podName": f"{CLUSTER_NAME}-head-8xq2l", "podIP": "10.0.0.5"},
            },
        },
    }


def raycluster_for(rayservice: dict[str, Any], replicas: dict[str, int]) -> dict[str, Any]:
    """The RayCluster KubeRay creates from `rayClusterConfig`, with the autoscaler's counts."""
    spec = copy.deepcopy(rayservice["spec"]["rayClusterConfig"])
    for group in spec["workerGroupSpecs"]:
        group["replicas"] = replicas.get(group["groupName"], group["replicas"])
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": CLUSTER_NAME, "labels": {"ray.io/originated-from-crd": "RayService"}},
        "spec": spec,
        "status": rayservice["status"]["activeServiceStatus"]["rayClusterStatus"],
    }


def ray_pod(
    name: str, group: str, *, phase: str = "Running", unschedulable: str | None = None
) -> dict[str, Any]:
    """A Ray pod as the API returns it: KubeRay's labels, the kubelet's/scheduler's status."""
    node_type = "head" if group == "headgroup" else "worker"
    if unschedulable is not None:
        conditions = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": unschedulable,
            }
        ]
    else:
        ready = "True" if phase == "Running" else "False"
        conditions = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": ready},
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "avatar",
            "labels": {
                "ray.io/cluster": CLUSTER_NAME,
                "ray.io/group": group,
                "ray.io/node-type": node_type,
                "ray.io/is-ray-node": "yes",
            },
        },
        "status": {"phase": phase, "conditions": conditions},
    }
