"""The RayService objects behind `avatar cluster`: status reading and `serveConfigV2` edits.

Pure functions over the Kubernetes JSON objects (the RayService, its RayCluster and the
cluster's pods, as the API server returns them), so the reading is the same whatever fetched
them. Field names are KubeRay's `ray.io/v1` ones: `.status.activeServiceStatus.
applicationStatuses` (Serve's app and deployment statuses, copied by the operator from the Ray
dashboard), `.status.pendingServiceStatus` (a new RayCluster being prepared by a zero-downtime
upgrade), the `Ready` and `UpgradeInProgress` conditions, and `observedGeneration`.
`scale_serve_config` edits one deployment's replica options in a parsed `serveConfigV2`, checked
with the app's own `DeploymentOptions` bounds. Bad input raises ValueError naming the field.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import ValidationError

from services.core.config import validation_message
from services.core.registry import STAGES
from services.core.serve_options import AutoscalingConfig, DeploymentOptions

# KubeRay's pod labels (ray-operator/controllers/ray/utils/constant.go).
CLUSTER_LABEL = "ray.io/cluster"
GROUP_LABEL = "ray.io/group"
NODE_TYPE_LABEL = "ray.io/node-type"
# Ray Serve's "done" states, as KubeRay copies them (rayservice_types.go enums).
APP_RUNNING = "RUNNING"
DEPLOYMENT_HEALTHY = "HEALTHY"

# `avatar cluster scale STAGE` -> the Serve deployment name deployments/app.py binds it under.
DEPLOYMENT_NAMES = {**{stage: stage for stage in STAGES}, "router": "router"}
APP_IMPORT_PATH = "deployments.app:build_app"

Obj = dict[str, Any]


def serve_deployments(serve_config: Obj) -> dict[str, list[str]]:
    """App name -> the deployment names the serveConfigV2 lists for it."""
    return {
        app.get("name", "default"): [d.get("name") for d in app.get("deployments") or []]
        for app in serve_config.get("applications") or []
    }


def _conditions(status: Obj) -> dict[str, Obj]:
    return {
        c["type"]: {k: c.get(k) for k in ("status", "reason", "message")}
        for c in status.get("conditions") or []
        if c.get("type")
    }


def _applications(active: Obj) -> list[Obj]:
    apps = []
    for name, app in sorted((active.get("applicationStatuses") or {}).items()):
        deployments = [
            {"name": dep, "status": info.get("status", ""), "message": info.get("message", "")}
            for dep, info in sorted((app.get("serveDeploymentStatuses") or {}).items())
        ]
        apps.append(
            {
                "name": name,
                "status": app.get("status", ""),
                "message": app.get("message", ""),
                "deployments": deployments,
            }
        )
    return apps


def _labels(pod: Obj) -> dict[str, str]:
    return (pod.get("metadata") or {}).get("labels") or {}


def _pod_ready(pod: Obj) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def pending_reason(pod: Obj) -> tuple[str, str]:
    """(reason, message) of a Pending pod: the scheduler's verdict, else a waiting container's."""
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return cond.get("reason") or "Unschedulable", cond.get("message") or ""
    for container in (status.get("initContainerStatuses") or []) + (
        status.get("containerStatuses") or []
    ):
        waiting = (container.get("state") or {}).get("waiting")
        if waiting:
            return waiting.get("reason") or "Waiting", waiting.get("message") or ""
    return status.get("reason") or "Pending", status.get("message") or ""


def _groups(cluster_spec: Obj, pods: list[Obj]) -> list[Obj]:
    groups = []
    for spec in cluster_spec.get("workerGroupSpecs") or []:
        name = spec.get("groupName", "")
        members = [p for p in pods if _labels(p).get(GROUP_LABEL) == name]
        groups.append(
            {
                "name": name,
                "ready": sum(_pod_ready(p) for p in members),
                "desired": spec.get("replicas", spec.get("minReplicas", 0)),
                "min": spec.get("minReplicas", 0),
                "max": spec.get("maxReplicas", 0),
                "pending": sum((p.get("status") or {}).get("phase") == "Pending" for p in members),
            }
        )
    return groups


def summarize(rayservice: Obj, raycluster: Obj | None, pods: list[Obj], serve_config: Obj) -> Obj:
    """The status report: apps, deployments, worker groups, pending pods and any problems.

    `raycluster` is the active RayCluster (None when it could not be read): its spec carries the
    replica counts the Ray autoscaler sets, the RayService's `rayClusterConfig` only the initial
    ones, which is what is shown then.
    """
    meta = rayservice.get("metadata") or {}
    status = rayservice.get("status") or {}
    active = status.get("activeServiceStatus") or {}
    pending_cluster = (status.get("pendingServiceStatus") or {}).get("rayClusterName") or ""
    conditions = _conditions(status)
    cluster_status = active.get("rayClusterStatus") or {}
    if raycluster is not None:
        cluster_spec, spec_source = raycluster.get("spec") or {}, "RayCluster"
    else:
        cluster_spec = (rayservice.get("spec") or {}).get("rayClusterConfig") or {}
        spec_source = "RayService"
    head = [p for p in pods if _labels(p).get(NODE_TYPE_LABEL) == "head"]
    pending = []
    for pod in pods:
        if (pod.get("status") or {}).get("phase") != "Pending":
            continue
        reason, message = pending_reason(pod)
        pending.append(
            {
                "name": pod["metadata"].get("name", ""),
                "group": _labels(pod).get(GROUP_LABEL, ""),
                "reason": reason,
                "message": message,
            }
        )
    summary = {
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name", ""),
        "generation": meta.get("generation"),
        "observed_generation": status.get("observedGeneration"),
        "service_status": status.get("serviceStatus", ""),
        "conditions": conditions,
        "pending_cluster": pending_cluster,
        "applications": _applications(active),
        "cluster": {
            "name": active.get("rayClusterName", ""),
            "state": cluster_status.get("state", ""),
            "ready_workers": cluster_status.get("readyWorkerReplicas", 0),
            "desired_workers": cluster_status.get("desiredWorkerReplicas", 0),
            "head_ready": any(_pod_ready(p) for p in head) if head else None,
            "spec_from": spec_source,
            "groups": _groups(cluster_spec, pods),
        },
        "pending_pods": pending,
    }
    summary["problems"] = problems(summary, serve_deployments(serve_config))
    summary["healthy"] = not summary["problems"]
    return summary


def problems(summary: Obj, expected: dict[str, list[str]]) -> list[str]:
    """Why the new config is not (yet) fully served; empty when it is."""
    found = []
    generation, observed = summary["generation"], summary["observed_generation"]
    if generation is not None and (observed is None or observed < generation):
        found.append(f"operator has not reconciled generation {generation} (observed {observed})")
    if summary["pending_cluster"]:
        found.append(f"upgrade in progress to RayCluster {summary['pending_cluster']}")
    elif summary["conditions"].get("UpgradeInProgress", {}).get("status") == "True":
        found.append("upgrade in progress")
    apps = {app["name"]: app for app in summary["applications"]}
    for name, deployments in expected.items():
        app = apps.get(name)
        if app is None:
            found.append(f"app {name}: no status yet")
            continue
        if app["status"] != APP_RUNNING:
            found.append(f"app {name}: {app['status'] or 'no status'}")
        statuses = {d["name"]: d["status"] for d in app["deployments"]}
        for dep in deployments:
            state = statuses.get(dep)
            if state != DEPLOYMENT_HEALTHY:
                found.append(f"{dep}: {state or 'no status'}")
    ready = summary["conditions"].get("Ready")
    if ready is not None and ready.get("status") != "True":
        found.append(f"Ready={ready.get('status')} ({ready.get('reason') or 'no reason'})")
    return found


def format_text(summary: Obj) -> str:
    """The human-readable report of `avatar cluster status`."""
    ready = summary["conditions"].get("Ready") or {}
    lines = [
        f"RayService {summary['namespace']}/{summary['name']}: "
        f"{'healthy' if summary['healthy'] else 'NOT healthy'}  "
        f"(generation {summary['generation']}, observed {summary['observed_generation']}"
        + (f", Ready={ready.get('status')} {ready.get('reason') or ''}".rstrip() if ready else "")
        + ")"
    ]
    if not summary["applications"]:
        lines.append("Serve: no application status reported yet")
    for app in summary["applications"]:
        message = f"  {app['message']}" if app["message"] else ""
        lines.append(f"Serve app {app['name']}: {app['status']}{message}")
        for dep in app["deployments"]:
            message = f"  {dep['message']}" if dep["message"] else ""
            lines.append(f"  {dep['name']:<10} {dep['status']}{message}")
    cluster = summary["cluster"]
    head = {True: "ready", False: "NOT ready", None: "no pod"}[cluster["head_ready"]]
    lines.append(
        f"RayCluster {cluster['name'] or '(none yet)'}: state {cluster['state'] or '-'}, "
        f"{cluster['ready_workers']}/{cluster['desired_workers']} workers ready, head {head}"
    )
    lines.append(
        f"  {'GROUP':<10} {'READY':>5} {'DESIRED':>7} {'MIN':>4} {'MAX':>4} {'PENDING':>7}"
    )
    for g in cluster["groups"]:
        lines.append(
            f"  {g['name']:<10} {g['ready']:>5} {g['desired']:>7} {g['min']:>4} {g['max']:>4}"
            f" {g['pending']:>7}"
        )
    if summary["pending_pods"]:
        lines.append(f"Pending pods ({len(summary['pending_pods'])}):")
        for pod in summary["pending_pods"]:
            lines.append(f"  {pod['name']} [{pod['group']}] {pod['reason']}: {pod['message']}")
    if summary["problems"]:
        lines.append("Problems: " + "; ".join(summary["problems"]))
    return "\n".join(lines)


def parse_serve_config(rayservice: dict[str, Any]) -> dict[str, Any]:
    text = (rayservice.get("spec") or {}).get("serveConfigV2") or ""
    try:
        parsed = yaml.safe_load(text) if text else {}
    except yaml.YAMLError as exc:
        raise ValueError(f"spec.serveConfigV2 is not valid YAML: {exc}") from None
    if not isinstance(parsed, dict):
        raise ValueError("spec.serveConfigV2 is not a Serve config mapping")
    return parsed


def _app_for(config: dict[str, Any], app_name: str | None) -> dict[str, Any]:
    apps = config.get("applications") or []
    if app_name is not None:
        matches = [a for a in apps if a.get("name") == app_name]
    else:
        matches = [a for a in apps if a.get("import_path") == APP_IMPORT_PATH]
    if len(matches) != 1:
        names = ", ".join(str(a.get("name")) for a in apps) or "none"
        wanted = f"app {app_name!r}" if app_name else f"one app importing {APP_IMPORT_PATH}"
        raise ValueError(f"serveConfigV2: expected {wanted}; apps: {names} (give --app)")
    return matches[0]


def scale_serve_config(
    config: dict[str, Any],
    stage: str,
    *,
    replicas: int | None = None,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    app_name: str | None = None,
) -> str:
    """Set a fixed count or autoscaling bounds of `stage` in a parsed serveConfigV2, in place.

    Returns a one-line description of the change. The numbers are checked with the app's own
    `DeploymentOptions`/`AutoscalingConfig` bounds; other options are left as they are.
    """
    if stage not in DEPLOYMENT_NAMES:
        raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(DEPLOYMENT_NAMES)}")
    if (replicas is None) == (min_replicas is None and max_replicas is None):
        raise ValueError("give --replicas N, or --min and/or --max for autoscaling")
    name = DEPLOYMENT_NAMES[stage]
    app = _app_for(config, app_name)
    deployments = app.setdefault("deployments", [])
    entry = next((d for d in deployments if d.get("name") == name), None)
    if entry is None:
        entry = {"name": name}
        deployments.append(entry)
    before = _scaling(entry)
    auto = dict(entry.get("autoscaling_config") or {})
    if replicas is not None:
        entry.pop("autoscaling_config", None)
        entry["num_replicas"] = replicas
    else:
        fixed = entry.get("num_replicas")
        fallback = fixed if isinstance(fixed, int) else None
        auto.setdefault("min_replicas", fallback if fallback is not None else 1)
        auto.setdefault("max_replicas", max(fallback or 1, auto["min_replicas"]))
        if min_replicas is not None:
            auto["min_replicas"] = min_replicas
        if max_replicas is not None:
            auto["max_replicas"] = max_replicas
        entry.pop("num_replicas", None)
        entry["autoscaling_config"] = auto
    known = {k: v for k, v in auto.items() if k in AutoscalingConfig.model_fields}
    try:
        DeploymentOptions.model_validate(
            {"num_replicas": replicas} if replicas is not None else {"autoscaling_config": known}
        )
    except ValidationError as exc:
        raise ValueError(f"{stage}: {validation_message(exc)}") from None
    return f"{app.get('name')}/{name}: {before} -> {_scaling(entry)}"


def _scaling(entry: dict[str, Any]) -> str:
    auto = entry.get("autoscaling_config")
    if auto:
        return f"autoscaling {auto.get('min_replicas')}..{auto.get('max_replicas')}"
    return f"num_replicas {entry.get('num_replicas', 'default')}"
