"""The load-test command lines (`avatar loadtest`, `avatar plan`) and the locust client.

The locust client runs in a subprocess: importing locust here would monkey-patch this process
with gevent.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loadtests.cli import _add_arguments, options_from_args
from loadtests.errors import LoadTestError
from loadtests.shapes import parse_shape

REPO = Path(__file__).resolve().parents[2]


def parse(*argv):
    import argparse

    parser = argparse.ArgumentParser()
    _add_arguments(parser)
    return options_from_args(parser.parse_args(list(argv)))


def test_command_line_options():
    opts = parse(
        "--fake-backends",
        "--users",
        "5",
        "--duration",
        "30",
        "--think",
        "1,3",
        "--slo",
        "ttff_p95_s=4",
        "--personas",
        "default,maya",
        "--no-realtime",
    )
    assert parse_shape(opts.shape).max_users == 5 and parse_shape(opts.shape).duration_s == 30
    assert opts.think_s == (1.0, 3.0) and opts.slo_overrides == {"ttff_p95_s": 4.0}
    assert opts.personas == ("default", "maya") and not opts.realtime
    for argv, message in (
        (("--url", "http://x", "--fake-backends"), "starts its own cluster"),
        (("--shape", "soak:users=2", "--users", "3"), "not both"),
        (("--think", "5,1"), "lo <= hi"),
        (("--slo", "ttff"), "KEY=NUMBER"),
    ):
        with pytest.raises(LoadTestError, match=message):
            parse(*argv)


def test_the_runner_and_planner_do_not_import_locust():
    # locust monkey-patches with gevent on import, which would break Ray in the runner.
    code = "import sys, loadtests.run, loadtests.plan; assert 'gevent' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


@pytest.mark.parametrize("module", ["loadtests.run", "loadtests.plan"])
def test_the_commands_run_as_modules(module):
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and f"python -m {module}" in result.stdout, result.stderr


LOCUST_CHECK = """
import locust  # first, as the locust command does: it monkey-patches ssl and sockets
import time, websocket, requests
import loadtests.locustfile as lf
from loadtests import locust_users, turn_errors as te, turn_trace

# locust runs the User classes it finds in the locustfile's namespace.
assert lf.ConversationUser is locust_users.ConversationUser and lf.HttpTurnUser

def bad_status(code):
    return websocket.WebSocketBadStatusException("Handshake status %d", code, "", {}, b"")

assert isinstance(te.failure(bad_status(503), "connect"), te.TurnRejected)
err = te.failure(bad_status(500), "connect")
assert isinstance(err, te.TurnFailed) and err.status == 500 and str(err) == "error 500 (connect)"
assert isinstance(te.failure(websocket.WebSocketTimeoutException(), "turn"), te.TurnTimeout)
assert isinstance(te.failure(requests.ConnectionError("Read timed out."), "turn"), te.TurnTimeout)
assert isinstance(te.failure(ConnectionResetError(), "turn"), te.TurnFailed)
assert isinstance(te.error_event(503, "turn"), te.TurnRejected)
assert len(locust_users.CLIPS) == 1 and locust_users.CLIPS[0].duration_s == 0.5

trace = turn_trace.Trace("ws", "default", locust_users.CLIPS[0])
trace.start()
assert trace.feed({"type": "audio", "start_s": 0.0, "duration_s": 1.0}, 10) == "audio"
time.sleep(0.05)
trace.feed({"type": "frame", "pts_s": 0.0}, 10)
time.sleep(0.3)
trace.feed({"type": "frame", "pts_s": 0.04}, 10)  # due at +0.04 s, came at +0.3 s
assert 0.2 < trace.stall_s < 0.5, trace.stall_s
assert trace.feed({"type": "done", "timings": {}}, 5) == "done"
assert trace.first_audio < trace.first_frame and trace.frames == 2 and trace.bytes == 35
assert abs(trace.playback_end - (trace.first_frame + 1.0)) < 1e-6
print("ok")
"""


def test_the_locust_client_classifies_failures_and_measures_playback(tmp_path):
    from services.core.audio import write_wav

    write_wav(tmp_path / "q0.wav", np.zeros(8000, dtype=np.float32), 16000)
    env = {"AVATAR_LOADTEST_CLIPS": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", LOCUST_CHECK],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def test_the_avatar_subcommands_register_on_a_subparsers_object():
    import argparse

    from loadtests.cli import add_loadtest_command
    from loadtests.plan import add_plan_command

    parser = argparse.ArgumentParser(prog="avatar")
    sub = parser.add_subparsers(dest="command", required=True)
    add_loadtest_command(sub)
    add_plan_command(sub)
    args = parser.parse_args(["loadtest", "--fake-backends", "--shape", "spike:peak=9"])
    assert callable(args.func) and args.fake_backends and args.shape == "spike:peak=9"
    args = parser.parse_args(["plan", "--sessions", "5", "--slo-ttff-ms", "2000"])
    assert callable(args.func) and args.sessions == 5 and args.slo_ttff_ms == 2000
