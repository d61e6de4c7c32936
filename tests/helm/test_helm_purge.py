"""Retention on Kubernetes: the chart's purge CronJob runs `avatar persona purge` with the schema
owner's URL (the only role that may delete turns), on the app config the RayService runs; the
Ray pods never see the owner's URL. Its command is run here as written, on SQLite."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.commands.main import main as avatar
from tests.helm.chart import GPU_VALUES, PROFILES, render, render_error, serve_config


def _purge(docs) -> tuple[dict[str, Any], dict[str, Any]]:
    (job,) = [d for d in docs if d["kind"] == "CronJob"]
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"]
                     == job["metadata"]["name"]]  # fmt: skip
    return job, config_map


def _container(job) -> dict[str, Any]:
    (container,) = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return container


def test_the_purge_runs_as_the_owner_on_the_rayservices_config(helm):
    docs = render((GPU_VALUES,))
    job, config_map = _purge(docs)
    (app,) = serve_config(docs)["applications"]
    config = json.loads(config_map["data"]["config.json"])
    for section in ("storage", "personas"):  # what the purge reads, as the app has them
        assert config[section] == app["args"]["config"][section], section
    container = _container(job)
    url_env = config["storage"]["url_env"]
    (owner,) = [e for e in container["env"] if e["name"] == url_env]
    assert owner["valueFrom"]["secretKeyRef"] == {"name": "avatar-postgres-owner", "key": "url"}
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    # No Ray container holds the owner's URL.
    rayservice = json.dumps([d for d in docs if d["kind"] == "RayService"])
    assert "avatar-postgres-owner" not in rayservice


def test_the_jobs_command_purges_on_the_rendered_config(helm, tmp_path, monkeypatch, capsys):
    job, config_map = _purge(render((GPU_VALUES,)))
    config = json.loads(config_map["data"]["config.json"])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    command = _container(job)["command"]
    assert command[0] == "avatar"
    args = [str(path) if a == "/etc/avatar/config.json" else a for a in command[1:]]
    monkeypatch.setenv(config["storage"]["url_env"], f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    monkeypatch.delenv("AVATAR_PERSONA_DIR", raising=False)  # the bundled packs
    assert avatar(args) == 0
    assert "turns_deleted" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("profile", ["default", "cpu"])
def test_no_purge_job_unless_enabled(helm, profile):
    assert not [d for d in render(PROFILES[profile]) if d["kind"] == "CronJob"]


def test_the_owner_url_is_required_and_must_not_be_the_apps(helm):
    missing = render_error((GPU_VALUES,), ("database.purge.ownerUrlSecret.name=",))
    assert "database.purge.ownerUrlSecret" in missing and "owner" in missing
    same = render_error((GPU_VALUES,), ("database.purge.ownerUrlSecret.name=avatar-postgres",))
    assert "must not hold the owner's URL" in same
