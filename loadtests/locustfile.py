"""Locust users of the avatar cluster: WebSocket conversations and one-request HTTP turns.

`ConversationUser` holds a WebSocket session (`/v1/session`) and talks in turns: it speaks a
question clip (streamed as 16-bit PCM at the pace of speech), takes in the streamed reply as
a client playing it would, listens until the reply has finished playing, thinks, and speaks
again. `HttpTurnUser` sends each question as one `POST /v1/turn` and reads the NDJSON stream.

Custom request events (locust's stats table, per persona):
  ttfa/<persona>   time to first audio, from the end of the user's input
  ttff/<persona>   time to first video frame
  turn/<persona>   whole turn (the `done` event); failures are recorded here, with a stable
                   message per cause: "503 rejected ...", "timeout ...", "error <status>"
  session/<persona> opening a WebSocket session (and hearing a persona's greeting)
Every turn is also appended to a JSONL file (`$AVATAR_LOADTEST_RECORDS`) for the runner's
report: outcome (ok | rejected | timeout | error), latencies, playback stall, user count.

Environment (the runner `loadtests.run` sets these):
  AVATAR_LOADTEST_CLIPS         folder of question WAVs (generated with espeak if unset)
  AVATAR_LOADTEST_RECORDS       JSONL file of per-turn records (none if unset)
  AVATAR_LOADTEST_PERSONAS      comma-separated persona ids; "default" = the app's default
  AVATAR_LOADTEST_TURN_TIMEOUT_S  a turn with no `done` after this long is a timeout (60)
  AVATAR_LOADTEST_THINK_S       "lo,hi": think time between turns, seconds (2,6)
  AVATAR_LOADTEST_REALTIME      1: speak and listen at the pace of speech (default); 0: flat out
  AVATAR_LOADTEST_WS_WEIGHT / AVATAR_LOADTEST_HTTP_WEIGHT  user mix (3 / 1)
  AVATAR_LOADTEST_SHAPE         a `loadtests.shapes` spec; without it, --users/--run-time rule

    locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:8000 -u 4 -t 60s

The users live in `loadtests.locust_users`, the turn measurement in `loadtests.turn_trace` and
the failure causes in `loadtests.turn_errors`; this file is what `locust -f` loads.
"""

from __future__ import annotations

import sys
from pathlib import Path

from locust import LoadTestShape

# locust puts only this file's folder on sys.path; the users live in the `loadtests` package.
_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

# locust runs the User classes it finds in this module's namespace: import them by name.
from loadtests.locust_users import ConversationUser, HttpTurnUser  # noqa: E402
from loadtests.shapes import shape_from_env  # noqa: E402

__all__ = ["ConversationUser", "HttpTurnUser"]


_SHAPE = shape_from_env()
if _SHAPE is not None:

    class AvatarLoadShape(LoadTestShape):
        """The `loadtests.shapes` shape named by $AVATAR_LOADTEST_SHAPE."""

        shape = _SHAPE

        def tick(self):
            return self.shape.tick(self.get_run_time())
