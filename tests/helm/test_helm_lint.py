"""`helm lint --strict` and `helm template` pass for the default, CPU and GPU values."""

from __future__ import annotations

import pytest

from tests.helm.chart import CHART, PROFILES, render, run_helm


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_helm_lint_strict(helm, profile):
    args = ["lint", "--strict", str(CHART)]
    for path in PROFILES[profile]:
        args += ["-f", str(path)]
    proc = run_helm(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_helm_template_renders_the_core_objects(helm, profile):
    kinds = [doc["kind"] for doc in render(PROFILES[profile])]
    assert kinds.count("RayService") == 1
    assert "PodDisruptionBudget" in kinds
    for doc in render(PROFILES[profile]):
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == "avatar", doc["kind"]


def test_gpu_values_switch_on_every_optional_object(helm):
    kinds = {doc["kind"] for doc in render(PROFILES["gpu"])}
    assert {"Ingress", "NetworkPolicy", "PodMonitor", "PodDisruptionBudget"} <= kinds


def test_notes_name_each_stage_and_its_pool(helm):
    proc = run_helm("install", "avatar", str(CHART), "--dry-run=client", "-n", "avatar")
    if proc.returncode != 0 and "cluster unreachable" in proc.stderr:
        pytest.skip("this helm (v3) needs a cluster even for install --dry-run=client")
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    for line in ("asr     riva       pool speech", "llm     trtllm     pool llm"):
        assert line in notes
    assert "port-forward svc/avatar-avatar-serve-serve 8000:8000" in notes
