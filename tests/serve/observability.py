"""What the observability tests share: exported metric names, dashboards' PromQL, rule files.

Used by `tests/serve/test_observability.py` (against a real Prometheus) and by the static
checks in `tests/unit/test_dashboards.py` / `tests/unit/test_prometheus_files.py`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

from services.core.telemetry import METRICS, Metric

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS_DIR = REPO / "infra" / "grafana" / "dashboards"
RULES_DIR = REPO / "infra" / "prometheus" / "rules"

# Ray exports `ray.serve.metrics` with a `ray_` prefix; counters get `_total`, histograms the
# usual three series (checked against a real run by test_observability).
RAY_PREFIX = "ray_"

# Serve's own metrics the dashboards and rules use (names as exported by Ray 2.60).
SERVE_METRICS = frozenset(
    {
        "ray_serve_deployment_queued_queries",  # per caller handle: requests not yet assigned
        "ray_serve_num_ongoing_requests_at_replicas",  # per caller handle: assigned, running
        "ray_serve_replica_processing_queries",  # per replica: requests it is processing
        "ray_serve_deployment_replica_healthy",  # per replica: 1 healthy / 0 not
        "ray_serve_autoscaling_target_replicas",  # per deployment: the bounded target
        "ray_serve_autoscaling_desired_replicas",  # autoscaled deployments: before min/max
        "ray_serve_num_http_requests_total",  # per application, route, status code (proxy)
    }
)

# Grafana's built-in interval variables, and the value each template variable takes when the
# tests run a dashboard's queries: every variable at "All" (`.*`, all our label variables are
# multi-value regex matchers), windows long enough to cover a whole test run.
BUILTIN_VALUES = {"__rate_interval": "5m", "__interval": "1m", "__range": "5m"}
PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
     "bool", "offset", "inf", "nan"}
)  # fmt: skip


def exported_names(metric: Metric) -> tuple[str, ...]:
    """The series names a catalogue metric has in Prometheus."""
    name = RAY_PREFIX + metric.name
    if metric.kind == "counter":
        return (name + "_total",)
    if metric.kind == "histogram":
        return (name + "_bucket", name + "_count", name + "_sum")
    return (name,)


def catalogue_names() -> frozenset[str]:
    return frozenset(n for m in METRICS for n in exported_names(m))


def load_dashboards() -> dict[Path, dict]:
    return {path: json.loads(path.read_text()) for path in sorted(DASHBOARDS_DIR.glob("*.json"))}


def panels(dashboard: dict) -> Iterator[dict]:
    """Every panel, rows' nested panels included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_exprs(dashboard: dict) -> Iterator[tuple[str, str]]:
    """(panel title / refId, PromQL) of every query target."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield f"{panel.get('title')} / {target.get('refId')}", target["expr"]


def template_variables(dashboard: dict) -> list[dict]:
    return dashboard.get("templating", {}).get("list", [])


def variable_queries(dashboard: dict) -> Iterator[tuple[str, str]]:
    """(variable name, PromQL) for each `label_values(metric{...}, label)` query variable.

    Grafana runs these as series look-ups; `count by (label) (metric{...})` asks Prometheus
    the same question and returns one sample per label value.
    """
    for var in template_variables(dashboard):
        if var.get("type") != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\s*\)\s*", query)
        assert match, f"variable {var['name']}: only label_values(metric, label) is supported"
        yield var["name"], f"count by ({match[2]}) ({match[1]})"


def substitute(expr: str, dashboard: dict) -> str:
    """The PromQL Grafana would send with every template variable at "All"."""
    values = dict(BUILTIN_VALUES)
    for var in template_variables(dashboard):
        if var.get("type") in ("query", "custom"):
            values[var["name"]] = var.get("allValue") or ".*"

    def value(match: re.Match) -> str:
        name = match[1] or match[2]
        if name not in values:
            raise KeyError(f"unknown template variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, labels or keywords)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values, regexes)
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range and subquery windows
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", s):
        if s[match.end() :].lstrip().startswith("("):  # a function call
            continue
        if match[0].lower() not in PROMQL_KEYWORDS:
            names.add(match[0])
    return names


def load_rule_groups() -> dict[Path, list[dict]]:
    return {
        path: yaml.safe_load(path.read_text())["groups"]
        for path in sorted(RULES_DIR.glob("*.y*ml"))
    }


def rules() -> Iterator[dict]:
    for groups in load_rule_groups().values():
        for group in groups:
            yield from group["rules"]


def recorded_names() -> frozenset[str]:
    return frozenset(rule["record"] for rule in rules() if "record" in rule)


def known_names() -> frozenset[str]:
    """Every metric name a dashboard or rule may select."""
    return catalogue_names() | SERVE_METRICS | recorded_names()
