"""Chaos (`serve` tier): a replica's process killed with SIGKILL mid-turn under 4 concurrent
sessions, once the TTS replica and once the router replica (`loadtests.chaos`). No turn may
hang: each in-flight turn completes or fails cleanly (an `error` event or a closed stream) within
the client's timeout; every session resumes with its history on a later turn; no audit row is
left "started" once `storage.stale_turn_s` (30 s here) has passed."""

from __future__ import annotations

import json

import pytest

from loadtests.chaos import chaos_config, run_chaos
from services.storage.database import open_storage

pytestmark = pytest.mark.serve

CLIENTS = 4


@pytest.fixture(scope="module")
def chaos_app(serve_instance):
    from deployments import ray_cluster

    port, state_dir = serve_instance
    config = chaos_config("chaos", port, state_dir)
    url = ray_cluster.deploy(config, route_prefix="/chaos")
    storage = open_storage(config.storage)
    yield url, config.name, storage.transcripts
    storage.close()


@pytest.mark.parametrize("deployment", ["tts", "router"])
def test_a_replica_killed_mid_turn_fails_turns_cleanly_and_sessions_resume(chaos_app, deployment):
    url, app, transcripts = chaos_app
    counts = run_chaos(url, app, deployment, transcripts, clients=CLIENTS)
    print(json.dumps(counts))
    assert counts["turns_hung"] == 0 and counts["clients_stuck"] == 0, counts
    assert counts["turns_completed"] + counts["turns_failed_cleanly"] == CLIENTS, counts
    assert counts["turns_failed_cleanly"] >= 1, counts  # the fault did hit a turn
    assert counts["sessions_resumed"] == CLIENTS, counts
    assert counts["audit_rows_left_started"] == 0, counts
