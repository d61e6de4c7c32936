"""infra/prometheus: promtool accepts the config and the rules, the alert unit tests pass, the
rules select only known metrics, and `avatar monitor` writes configs promtool accepts too."""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from services.commands import monitor
from services.core.telemetry import LATENCY_BUCKETS
from tests.serve import observability as obs

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "infra" / "prometheus"
RULE_FILES = sorted(obs.RULES_DIR.glob("*.y*ml"))


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is absent (apt-get install -y prometheus)")
    return path


def run(promtool: str, *args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run([promtool, *args], capture_output=True, text=True, cwd=cwd, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_promtool_check_config(promtool):
    out = run(promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert f"{len(RULE_FILES)} rule files found" in out


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(promtool, path):
    run(promtool, "check", "rules", str(path))


def test_alert_unit_tests(promtool):
    # Synthetic series through the real rule engine: each alert fires when (and only when) its
    # story says so.
    run(promtool, "test", "rules", "alerts_test.yaml", cwd=PROMETHEUS_DIR / "tests")


def test_rules_select_only_known_metrics_and_are_documented():
    for rule in obs.rules():
        unknown = obs.metric_names(rule["expr"]) - obs.known_names()
        assert not unknown, f"{rule.get('record') or rule['alert']}: unknown {unknown}"
        if "alert" in rule:
            assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_slo_threshold_is_a_bucket_boundary():
    # The time-to-first-frame SLO rules count the le="3.0" bucket: without that boundary the
    # bucket series would not exist and the SLO ratio would silently read "no data".
    assert 3.0 in LATENCY_BUCKETS
    slo_rules = [r for r in obs.rules() if "ttff_slo_miss" in r.get("record", "")]
    assert slo_rules and all('le=~"3|3\\\\.0"' in r["expr"] for r in slo_rules)


def test_every_alert_is_unit_tested():
    tests = yaml.safe_load((PROMETHEUS_DIR / "tests" / "alerts_test.yaml").read_text())
    tested = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested == {rule["alert"] for rule in obs.rules() if "alert" in rule}


def test_monitor_writes_a_config_promtool_accepts(promtool, tmp_path):
    path = monitor.write_config(
        tmp_path / "prometheus.yml", ["127.0.0.1:8080", "10.0.0.2:8080"], scrape_interval="2s"
    )
    config = yaml.safe_load(path.read_text())
    assert config["global"]["scrape_interval"] == "2s"
    assert config["rule_files"] == [str(obs.RULES_DIR.resolve() / "*.yaml")]
    (job,) = config["scrape_configs"]
    assert job["static_configs"] == [{"targets": ["127.0.0.1:8080", "10.0.0.2:8080"]}]
    out = run(promtool, "check", "config", str(path))
    assert f"{len(RULE_FILES)} rule files found" in out


def test_monitor_needs_a_target(tmp_path):
    with pytest.raises(monitor.MonitorError, match="no scrape target"):
        monitor.write_config(tmp_path / "p.yml", [])


def test_monitor_finds_the_live_ray_metrics_ports(tmp_path):
    with socket.socket() as live:
        live.bind(("127.0.0.1", 0))
        live.listen()
        port = live.getsockname()[1]
        (tmp_path / "metrics_export_port_aaa").write_text(f"{port}\n")
        (tmp_path / "metrics_export_port_bbb").write_text(f"{monitor.free_port()}\n")  # dead
        (tmp_path / "metrics_export_port_ccc").write_text("garbage")
        assert monitor.discover_targets(tmp_path) == [f"127.0.0.1:{port}"]


def test_monitor_command_line(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="avatar")
    monitor.add_monitor_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["monitor", "--target", "127.0.0.1:9999", "--data-dir", str(tmp_path), "--config-only"]
    )
    assert args.func(args) == 0
    written = Path(capsys.readouterr().out.strip())
    assert written == tmp_path / "prometheus.yml"
    assert "127.0.0.1:9999" in written.read_text()


def test_monitor_explains_a_missing_prometheus(tmp_path):
    with pytest.raises(monitor.MonitorError, match="apt-get install -y prometheus"):
        monitor.start_prometheus(tmp_path / "p.yml", tmp_path, binary=str(tmp_path / "nope"))
