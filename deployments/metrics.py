"""Ray Serve metrics sink: the `services.core.telemetry` catalogue as `ray.serve.metrics` objects.

Ray exports them on each node's metrics port with a `ray_` prefix (and Serve's own
deployment/replica/application tags), next to Serve's built-in queue and replica metrics.
"""

from __future__ import annotations

import threading

from ray.serve import metrics as serve_metrics

from services.core.telemetry import BY_NAME, Telemetry

_created: dict[str, object] = {}
_lock = threading.Lock()


def _metric(name: str):
    with _lock:
        if name not in _created:
            spec = BY_NAME[name]
            if spec.kind == "counter":
                metric = serve_metrics.Counter(
                    name, description=spec.description, tag_keys=spec.labels
                )
            elif spec.kind == "histogram":
                metric = serve_metrics.Histogram(
                    name,
                    description=spec.description,
                    boundaries=list(spec.buckets),
                    tag_keys=spec.labels,
                )
            else:
                metric = serve_metrics.Gauge(
                    name, description=spec.description, tag_keys=spec.labels
                )
            _created[name] = metric
        return _created[name]


class RaySink:
    """Records into Ray's metric registry (created lazily, once per process)."""

    def inc(self, name: str, value: float, tags: dict[str, str]) -> None:
        _metric(name).inc(value, tags=tags or None)

    def observe(self, name: str, value: float, tags: dict[str, str]) -> None:
        _metric(name).observe(value, tags=tags or None)

    def set(self, name: str, value: float, tags: dict[str, str]) -> None:
        _metric(name).set(value, tags=tags or None)


def ray_telemetry() -> Telemetry:
    return Telemetry(RaySink())
