"""What the locust users read from their environment (the runner `loadtests.run` sets it).

Read once at import, in the locust process; the variables are listed in the locustfile's
docstring.
"""

from __future__ import annotations

import os


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


TURN_TIMEOUT_S = _env_float("AVATAR_LOADTEST_TURN_TIMEOUT_S", 60.0)
THINK_S = tuple(float(x) for x in os.environ.get("AVATAR_LOADTEST_THINK_S", "2,6").split(","))
REALTIME = os.environ.get("AVATAR_LOADTEST_REALTIME", "1").strip() not in ("0", "false", "no")
PERSONAS = [p.strip() for p in os.environ.get("AVATAR_LOADTEST_PERSONAS", "default").split(",")]
WS_WEIGHT = int(_env_float("AVATAR_LOADTEST_WS_WEIGHT", 3))
HTTP_WEIGHT = int(_env_float("AVATAR_LOADTEST_HTTP_WEIGHT", 1))
CLIPS_DIR = os.environ.get("AVATAR_LOADTEST_CLIPS")
RECORDS_PATH = os.environ.get("AVATAR_LOADTEST_RECORDS")
# How often an idle WebSocket user reads its socket (uvicorn pings every 20 s).
KEEPALIVE_S = 2.0
