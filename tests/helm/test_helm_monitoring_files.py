"""PrometheusRules and Grafana dashboard ConfigMaps come from the repo's single copy in infra/
(through the chart's `files/infra` symlink): none while those files are absent, one object per
file once they exist. The examples here live under pytest's tmp_path, never in the repo."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from tests.helm.chart import CHART, PROFILES, REPO, render, run_helm

MONITORING_ON = ("monitoring.prometheusRule.enabled=true", "monitoring.dashboards.enabled=true")

RULES = """\
groups:
  - name: avatar-serve-latency
    rules:
      - alert: AvatarStageSlow
        expr: >-
          histogram_quantile(0.99, sum by (le, stage) (rate(ray_avatar_stage_seconds_bucket[5m])))
          > 2
        for: 5m
        labels: {severity: warning}
        annotations:
          summary: "p99 of {{ $labels.stage }} is {{ $value }}s"
"""
DASHBOARD = {"uid": "avatar-overview", "title": "Avatar overview", "panels": []}


def _repo_files(pattern: str) -> list[Path]:
    return sorted(REPO.glob(pattern))


def _example_checkout(tmp_path: Path) -> Path:
    """A copy of the chart beside an infra/ holding one rule file and one dashboard."""
    chart = tmp_path / "helm" / "avatar-serve"
    shutil.copytree(CHART, chart, symlinks=True)
    rules = tmp_path / "infra" / "prometheus" / "rules"
    dashboards = tmp_path / "infra" / "grafana" / "dashboards"
    rules.mkdir(parents=True)
    dashboards.mkdir(parents=True)
    (rules / "avatar_latency.yaml").write_text(RULES)
    (dashboards / "avatar-overview.json").write_text(json.dumps(DASHBOARD, indent=2))
    (tmp_path / "infra" / "k8s").mkdir()
    (tmp_path / "infra" / "k8s" / "Dockerfile").write_text("FROM scratch\n")
    # The chart's files/configs link points at the app configs: bring the real ones along.
    shutil.copytree(REPO / "deployments" / "configs", tmp_path / "deployments" / "configs")
    return chart


def test_files_infra_is_a_symlink_to_the_repo_infra():
    link = CHART / "files" / "infra"
    assert link.is_symlink()
    assert link.resolve() == (REPO / "infra").resolve()


def test_one_object_per_rule_file_and_dashboard_in_the_repo(helm):
    docs = render((), MONITORING_ON)
    rules = [d for d in docs if d["kind"] == "PrometheusRule"]
    dashboards = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"]["labels"]
    ]
    rule_files = _repo_files("infra/prometheus/rules/*.yaml") + _repo_files(
        "infra/prometheus/rules/*.yml"
    )
    assert len(rules) == len(rule_files)
    assert len(dashboards) == len(_repo_files("infra/grafana/dashboards/*.json"))


def test_rules_and_dashboards_render_once_the_files_exist(helm, tmp_path):
    chart = _example_checkout(tmp_path)
    docs = render((), MONITORING_ON, chart)
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["metadata"]["name"] == "avatar-avatar-serve-avatar-latency"
    alert = rule["spec"]["groups"][0]["rules"][0]
    # Prometheus templates in the rule file reach the PrometheusRule verbatim, not Helm-rendered.
    assert alert["annotations"]["summary"] == "p99 of {{ $labels.stage }} is {{ $value }}s"

    (dashboard,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["avatar-overview.json"]) == DASHBOARD
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed")
    kv.validate(dashboard, "1.33.0", strict=True)


def test_dashboards_and_rules_can_be_switched_off(helm, tmp_path):
    chart = _example_checkout(tmp_path)
    docs = render((), ("monitoring.dashboards.enabled=false",), chart)
    assert not [d for d in docs if d["kind"] in ("PrometheusRule", "ConfigMap")]


def test_a_rule_file_without_groups_is_a_clear_error(helm, tmp_path):
    chart = _example_checkout(tmp_path)
    (tmp_path / "infra/prometheus/rules/broken.yaml").write_text("rules: []\n")
    proc = run_helm("template", "avatar", str(chart), "--set", MONITORING_ON[0])
    assert proc.returncode != 0
    assert "files/infra/prometheus/rules/broken.yaml: a Prometheus rule file needs" in proc.stderr


def test_helm_package_follows_the_symlink_and_skips_infra_k8s(helm, tmp_path):
    chart = _example_checkout(tmp_path)
    proc = run_helm("package", str(chart), "--destination", str(tmp_path / "dist"))
    assert proc.returncode == 0, proc.stderr
    (archive,) = (tmp_path / "dist").glob("avatar-serve-*.tgz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "avatar-serve/files/infra/grafana/dashboards/avatar-overview.json" in names
    assert "avatar-serve/files/infra/prometheus/rules/avatar_latency.yaml" in names
    assert not [n for n in names if "/files/infra/k8s" in n]
    assert "avatar-serve/files/configs/gpu.yaml" in names  # the app config travels too


def test_default_render_needs_no_prometheus_operator(helm):
    kinds = {d["kind"] for d in render(PROFILES["default"])}
    assert not kinds & {"PodMonitor", "PrometheusRule"}
