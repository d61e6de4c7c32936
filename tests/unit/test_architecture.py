"""The layout rules, checked in CI: import contracts, ruff, file size and module docstrings.

The README's test command is what CI runs, so the static checks live here as tests.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CODE_ROOTS = ("services", "deployments", "loadtests", "scripts")
MAX_LINES = 400  # past this a file usually holds more than one job: split it by concern


def _tool(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (the dev extra)")
    return found


def _code_files() -> list[Path]:
    return sorted(p for root in CODE_ROOTS for p in (REPO / root).rglob("*.py"))


def test_import_contracts_hold():
    """pyproject's [tool.importlinter]: layers, no Ray/deployments/loadtests in services."""
    proc = subprocess.run(
        [_tool("lint-imports"), "--no-cache"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_ruff_lint_and_format_are_clean():
    ruff = _tool("ruff")
    lint = subprocess.run([ruff, "check", "."], cwd=REPO, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout[-4000:]
    fmt = subprocess.run([ruff, "format", "--check", "."], cwd=REPO, capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout[-4000:]


def test_code_files_stay_small():
    long = {
        str(p.relative_to(REPO)): n
        for p in _code_files()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines (split them by concern): {long}"


def test_every_code_file_says_what_it_holds():
    missing = [
        str(p.relative_to(REPO))
        for p in _code_files()
        if ast.get_docstring(ast.parse(p.read_text())) is None
    ]
    assert not missing, f"files without a module docstring: {missing}"
