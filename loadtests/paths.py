"""Where the load-test files live: the locustfile, the SLO file and the app configs it starts."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LOCUSTFILE = HERE / "locustfile.py"
SLO_FILE = HERE / "slo.yaml"
FAKE_CONFIG = HERE / "configs" / "fake.yaml"
LOCAL_CONFIG = REPO / "deployments" / "configs" / "local.yaml"
