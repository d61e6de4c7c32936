"""`avatar cluster status|scale|rollout`: operate the chart's RayService on Kubernetes.

Uses the official `kubernetes` client (`pip install 'avatar-serve[cluster]'`) with the usual
credentials: `--kubeconfig`/`$KUBECONFIG`/`~/.kube/config` and `--context`, else the pod's
service account. `status` reads the RayService (`ray.io/v1`), its active RayCluster and the
cluster's pods; `scale` edits one deployment's replica options inside `spec.serveConfigV2` with
a JSON merge patch (KubeRay then applies the new Serve config in place); `rollout` polls until
the operator has reconciled the latest generation and every Serve app is RUNNING and every
deployment HEALTHY. Status reading lives in `cluster_status`.

A scale is a live change: the next `helm upgrade` renders `serveConfigV2` from the values again,
so lasting numbers belong in the values (`app.config.stages.<stage>.serve`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from services.commands.cluster_status import (
    CLUSTER_LABEL,
    DEPLOYMENT_NAMES,
    format_text,
    parse_serve_config,
    scale_serve_config,
    summarize,
)

GROUP, VERSION, PLURAL, CLUSTER_PLURAL = "ray.io", "v1", "rayservices", "rayclusters"
# The chart labels its RayService so one release per namespace is found without --name.
CHART_SELECTOR = "app.kubernetes.io/name=avatar-serve"
SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
REQUEST_TIMEOUT = (5, 30)  # (connect, read) seconds per API call
MERGE_PATCH = "application/merge-patch+json"
INSTALL_HINT = "the kubernetes client is missing: pip install 'avatar-serve[cluster]'"


class ClusterError(RuntimeError):
    """The cluster could not be read or changed; the message says why (exit status 2)."""


def _kubernetes():
    try:
        import kubernetes
    except ImportError:
        raise ClusterError(INSTALL_HINT) from None
    return kubernetes


def connect(kubeconfig: str | None, context: str | None, namespace: str | None) -> tuple[Any, str]:
    """(ApiClient, namespace) from the kubeconfig (kubectl's rules) or the in-cluster account."""
    k8s = _kubernetes()
    configuration = k8s.client.Configuration()
    # $KUBECONFIG read now, not when the client was imported (it may hold several paths)
    config_file = kubeconfig or os.environ.get("KUBECONFIG")
    path = config_file or "~/.kube/config"
    has_file = any(Path(p).expanduser().exists() for p in path.split(os.pathsep) if p)
    if kubeconfig or context or has_file:
        try:
            k8s.config.load_kube_config(
                config_file=config_file, context=context, client_configuration=configuration
            )
            contexts, active = k8s.config.list_kube_config_contexts(config_file=config_file)
        except (k8s.config.ConfigException, OSError, yaml.YAMLError) as exc:
            raise ClusterError(f"kubeconfig {path}: {exc}") from None
        chosen = next((c for c in contexts if c["name"] == context), active) if context else active
        namespace = namespace or (chosen or {}).get("context", {}).get("namespace") or "default"
    else:
        try:
            k8s.config.load_incluster_config(client_configuration=configuration)
        except k8s.config.ConfigException:
            raise ClusterError(
                f"no Kubernetes credentials: no kubeconfig at {path} and not running in a pod "
                "(give --kubeconfig or set $KUBECONFIG)"
            ) from None
        in_pod = SA_NAMESPACE.read_text().strip() if SA_NAMESPACE.is_file() else "default"
        namespace = namespace or in_pod
    return k8s.client.ApiClient(configuration), namespace


def _api_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        return json.loads(body).get("message") or str(exc.reason)
    return f"{getattr(exc, 'status', '')} {getattr(exc, 'reason', '')}".strip()


class Cluster:
    """One RayService (and its RayCluster and pods) through the Kubernetes API."""

    def __init__(self, api_client: Any, namespace: str, name: str | None = None) -> None:
        k8s = _kubernetes()
        self._k8s = k8s
        self.api_client = api_client
        self.custom = k8s.client.CustomObjectsApi(api_client)
        self.core = k8s.client.CoreV1Api(api_client)
        self.namespace = namespace
        self.name = name or self._find_name()

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """API failures -> ClusterError naming what was asked of which server."""
        import urllib3

        exceptions = self._k8s.client.exceptions
        try:
            yield
        except exceptions.NotFoundException as exc:
            raise ClusterError(f"{what} not found: {_api_message(exc)}") from None
        except exceptions.ConflictException:
            raise ClusterError(
                f"{what}: changed by someone else meanwhile (resourceVersion conflict); run again"
            ) from None
        except exceptions.ApiException as exc:
            raise ClusterError(f"{what}: HTTP {exc.status}: {_api_message(exc)}") from None
        except urllib3.exceptions.HTTPError as exc:
            host = self.api_client.configuration.host
            reason = getattr(exc, "reason", None) or exc
            raise ClusterError(f"Kubernetes API {host} unreachable: {reason}") from None

    def _find_name(self) -> str:
        with self._errors(f"RayServices in namespace {self.namespace}"):
            found = self.custom.list_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                label_selector=CHART_SELECTOR,
                _request_timeout=REQUEST_TIMEOUT,
            )
        names = sorted(item["metadata"]["name"] for item in found.get("items", []))
        if len(names) != 1:
            which = f"several ({', '.join(names)})" if names else "no"
            raise ClusterError(
                f"{which} avatar-serve RayService in namespace {self.namespace}: give --name "
                "(and --namespace)"
            )
        return names[0]

    @property
    def ref(self) -> str:
        return f"RayService {self.namespace}/{self.name}"

    def get(self) -> dict[str, Any]:
        with self._errors(self.ref):
            return self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name, _request_timeout=REQUEST_TIMEOUT
            )

    def patch_serve_config(self, text: str, resource_version: str | None) -> dict[str, Any]:
        """Merge-patch `spec.serveConfigV2`; the resourceVersion makes a concurrent edit a 409."""
        body: dict[str, Any] = {"spec": {"serveConfigV2": text}}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        with self._errors(self.ref):
            return self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                self.name,
                body,
                _content_type=MERGE_PATCH,
                _request_timeout=REQUEST_TIMEOUT,
            )

    def _raycluster(self, name: str) -> dict[str, Any] | None:
        with self._errors(f"RayCluster {self.namespace}/{name}"):
            try:
                return self.custom.get_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    CLUSTER_PLURAL,
                    name,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            except self._k8s.client.exceptions.ApiException:
                # Gone mid-upgrade or not readable with this account: the RayService spec is shown.
                return None

    def _pods(self, clusters: list[str]) -> list[dict[str, Any]]:
        selector = f"{CLUSTER_LABEL} in ({','.join(clusters)})"
        with self._errors(f"pods of {self.ref}"):
            pods = self.core.list_namespaced_pod(
                self.namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
            )
        return self.api_client.sanitize_for_serialization(pods.items or [])

    def summary(self) -> dict[str, Any]:
        rayservice = self.get()
        status = rayservice.get("status") or {}
        active = (status.get("activeServiceStatus") or {}).get("rayClusterName")
        pending = (status.get("pendingServiceStatus") or {}).get("rayClusterName")
        clusters = [c for c in (active, pending) if c]
        raycluster = self._raycluster(active) if active else None
        pods = self._pods(clusters) if clusters else []
        return summarize(rayservice, raycluster, pods, parse_serve_config(rayservice))


def wait_for_rollout(
    cluster: Cluster,
    *,
    timeout_s: float,
    interval_s: float,
    out: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Poll until the latest generation is served healthy; ClusterError after `timeout_s`."""
    start = time.monotonic()
    while True:
        summary = cluster.summary()
        elapsed = time.monotonic() - start
        if summary["healthy"]:
            out(
                f"[{elapsed:5.1f}s] rollout of {cluster.ref} done: generation "
                f"{summary['generation']} served, every deployment HEALTHY"
            )
            return summary
        waiting = "; ".join(summary["problems"])
        if elapsed >= timeout_s:
            raise ClusterError(f"rollout of {cluster.ref} not done after {timeout_s:g}s: {waiting}")
        out(f"[{elapsed:5.1f}s] waiting: {waiting}")
        time.sleep(min(interval_s, max(timeout_s - elapsed, 0.0)))


def _cluster(args: argparse.Namespace) -> Cluster:
    api_client, namespace = connect(args.kubeconfig, args.context, args.namespace)
    return Cluster(api_client, namespace, args.name)


def _status(args: argparse.Namespace) -> int:
    summary = _cluster(args).summary()
    print(json.dumps(summary, indent=2) if args.json else format_text(summary))
    return 0


def _scale(args: argparse.Namespace) -> int:
    _check_wait(args)
    for flag, value, low in (
        ("--replicas", args.replicas, 1),
        ("--min", args.min, 0),
        ("--max", args.max, 1),
    ):
        if value is not None and value < low:
            raise ClusterError(f"{flag} must be >= {low}, got {value}")
    if args.stage not in DEPLOYMENT_NAMES:
        raise ClusterError(f"unknown stage {args.stage!r}; valid: {', '.join(DEPLOYMENT_NAMES)}")
    if (args.replicas is None) == (args.min is None and args.max is None):
        raise ClusterError("give --replicas N, or --min and/or --max for autoscaling")
    cluster = _cluster(args)
    rayservice = cluster.get()
    config = parse_serve_config(rayservice)
    change = scale_serve_config(
        config,
        args.stage,
        replicas=args.replicas,
        min_replicas=args.min,
        max_replicas=args.max,
        app_name=args.app,
    )
    text = yaml.safe_dump(config, sort_keys=False)
    patched = cluster.patch_serve_config(text, rayservice["metadata"].get("resourceVersion"))
    generation = patched.get("metadata", {}).get("generation")
    print(f"{cluster.ref} patched (generation {generation}): {change}")
    values = (
        "app.config.router.serve"
        if args.stage == "router"
        else f"app.config.stages.{args.stage}.serve"
    )
    print(f"live change: the next `helm upgrade` sets it from the values again ({values})")
    if args.wait:
        wait_for_rollout(cluster, timeout_s=args.timeout, interval_s=args.interval)
    return 0


def _check_wait(args: argparse.Namespace) -> None:
    if args.timeout < 1:
        raise ClusterError(f"--timeout must be >= 1 second, got {args.timeout:g}")
    if args.interval <= 0:
        raise ClusterError(f"--interval must be > 0 seconds, got {args.interval:g}")


def _rollout(args: argparse.Namespace) -> int:
    _check_wait(args)
    wait_for_rollout(_cluster(args), timeout_s=args.timeout, interval_s=args.interval)
    return 0


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="RayService name (default: the one avatar-serve release)")
    parser.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube)")


def _add_wait(parser: argparse.ArgumentParser, timeout: float) -> None:
    parser.add_argument("--timeout", type=float, default=timeout, help="seconds to wait at most")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between polls")


def add_cluster_commands(sub) -> None:
    """Add `avatar cluster status|scale|rollout` to an argparse subparsers object."""
    cluster = sub.add_parser(
        "cluster", help="status, scaling and rollouts of the avatar RayService on Kubernetes"
    )
    leaves = cluster.add_subparsers(dest="cluster_command", required=True)

    status = leaves.add_parser("status", help="Serve apps, worker groups and pending pods")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=_status)

    scale = leaves.add_parser("scale", help="set a stage's replicas or autoscaling bounds")
    scale.add_argument("stage", help=f"one of {', '.join(DEPLOYMENT_NAMES)}")
    scale.add_argument("--replicas", type=int, help="fixed replica count (turns autoscaling off)")
    scale.add_argument("--min", type=int, help="autoscaling min_replicas")
    scale.add_argument("--max", type=int, help="autoscaling max_replicas")
    scale.add_argument("--app", help="Serve application (default: the avatar app)")
    scale.add_argument("--wait", action="store_true", help="then wait like `rollout`")
    _add_wait(scale, 600.0)
    scale.set_defaults(func=_scale)

    rollout = leaves.add_parser(
        "rollout", help="wait until the latest config is served and every deployment HEALTHY"
    )
    _add_wait(rollout, 600.0)
    rollout.set_defaults(func=_rollout)

    for leaf in (status, scale, rollout):
        _add_target(leaf)
