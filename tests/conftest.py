"""Shared test setup: `gpu` tests skip (with the reason) where no CUDA GPU is visible."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def _cuda_available() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if gpu_items and not _cuda_available():
        skip = pytest.mark.skip(reason="no CUDA GPU visible (nvidia-smi -L failed)")
        for item in gpu_items:
            item.add_marker(skip)
