"""The `helm` fixture: skips a test, with the reason, when no helm binary is installed."""

from __future__ import annotations

import pytest

from tests.helm.chart import HELM_MISSING, find_helm


@pytest.fixture(scope="session")
def helm() -> str:
    path = find_helm()
    if path is None:
        pytest.skip(HELM_MISSING)
    return path
