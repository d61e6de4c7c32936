"""Run the real `helm` binary on helm/avatar-serve and parse what it renders.

helm is looked up on PATH, then in `${AVATAR_TOOLS_DIR:-~/.cache/avatar-serve/bin}` where
`scripts/install-helm.sh` puts it. Renders are cached per (chart, values files, --set) because
every test module reads the same few renders.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "avatar-serve"
CPU_VALUES = CHART / "ci" / "cpu-values.yaml"
GPU_VALUES = CHART / "ci" / "gpu-values.yaml"
# name -> values files: the three renders every test module checks
PROFILES: dict[str, tuple[Path, ...]] = {
    "default": (),
    "cpu": (CPU_VALUES,),
    "gpu": (GPU_VALUES,),
}
SHARED = REPO.parent / "shared"
KUBERAY_CRDS = SHARED / "kuberay-crds"
STAGES = ("asr", "llm", "tts", "render")
DEPLOYMENTS = (*STAGES, "router")


def tools_dir() -> Path:
    return Path(os.environ.get("AVATAR_TOOLS_DIR", Path.home() / ".cache/avatar-serve/bin"))


def find_helm() -> str | None:
    """Path of a working helm binary, or None."""
    candidate = shutil.which("helm") or str(tools_dir() / "helm")
    if not os.access(candidate, os.X_OK):
        return None
    return candidate


HELM_MISSING = (
    f"helm not found on PATH or in {tools_dir()}: run scripts/install-helm.sh "
    "(it puts the official static helm there)"
)


def run_helm(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    helm = find_helm()
    if helm is None:
        raise RuntimeError(HELM_MISSING)
    proc = subprocess.run(
        [helm, *args], capture_output=True, text=True, timeout=120, cwd=REPO, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def template_args(
    values: tuple[Path, ...] = (), sets: tuple[str, ...] = (), chart: Path = CHART
) -> list[str]:
    return ["template", "avatar", str(chart), "--namespace", "avatar", *value_args(values, sets)]


def value_args(values: tuple[Path, ...] = (), sets: tuple[str, ...] = ()) -> list[str]:
    """-f/--set flags; "json:key=value" passes a JSON value (--set turns 0.5 into a string)."""
    args: list[str] = []
    for path in values:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set-json", item[5:]] if item.startswith("json:") else ["--set", item]
    return args


@functools.cache
def render(
    values: tuple[Path, ...] = (), sets: tuple[str, ...] = (), chart: Path = CHART
) -> tuple[dict[str, Any], ...]:
    """The rendered objects (empty documents dropped)."""
    proc = run_helm(*template_args(values, sets, chart), check=True)
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def render_error(values: tuple[Path, ...] = (), sets: tuple[str, ...] = ()) -> str:
    """stderr of a `helm template` that must fail."""
    proc = run_helm(*template_args(values, sets))
    assert proc.returncode != 0, f"helm template unexpectedly succeeded with {values} {sets}"
    return proc.stderr


def only(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    matches = [doc for doc in docs if doc["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, got {len(matches)}"
    return matches[0]


def serve_config(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """The RayService's serveConfigV2, parsed."""
    return yaml.safe_load(only(docs, "RayService")["spec"]["serveConfigV2"])


def load_values(path: Path = CHART / "values.yaml") -> dict[str, Any]:
    return yaml.safe_load(path.read_text())
