"""`avatar keys create|list|revoke|generate`, what `avatar serve` says about auth before it starts
anything, and `avatar talk --server --api-key` sending the key."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from services.commands.main import main
from services.core.config import AppConfig


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("AVATAR_DATABASE_URL", raising=False)
    monkeypatch.delenv("AVATAR_BOOTSTRAP_KEY", raising=False)
    path = tmp_path / "app.yaml"
    db = tmp_path / "keys.sqlite3"
    path.write_text(yaml.safe_dump({"storage": {"sqlite_path": str(db)}}))
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_create_prints_the_token_once_and_list_never_shows_it(config, capsys) -> None:
    code, out, err = _run(
        capsys, "keys", "create", "--tenant", "acme", "--personas", "maya-castellan,theo-brandt",
        "--history", "--config", str(config),
    )  # fmt: skip
    assert code == 0
    token = out.strip()
    key_id, secret = token.split("_", 2)[1:]
    assert f"created key {key_id} for tenant acme" in err and "shown only now" in err
    code, out, _ = _run(capsys, "keys", "list", "--config", str(config))
    assert code == 0 and key_id in out and "maya-castellan,theo-brandt" in out
    assert "history" in out and "active" in out and secret not in out
    code, out, _ = _run(capsys, "keys", "list", "--json", "--config", str(config))
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["key_id"] == key_id and row["revoked_at"] is None and "token" not in row
    db = yaml.safe_load(config.read_text())["storage"]["sqlite_path"]
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT * FROM api_keys").fetchall()
    assert secret not in repr(stored)


def test_revoke_then_list(config, capsys) -> None:
    code, out, _ = _run(
        capsys, "keys", "create", "--tenant", "acme", "--admin", "--json", "--config", str(config)
    )
    created = json.loads(out)
    assert created["admin"] and created["history"] and created["token"].startswith("avk_")
    code, out, _ = _run(capsys, "keys", "revoke", created["key_id"], "--config", str(config))
    assert code == 0 and f"revoked key {created['key_id']} of tenant acme" in out
    code, out, _ = _run(capsys, "keys", "list", "--config", str(config))
    assert "revoked" in out
    code, out, err = _run(capsys, "keys", "list", "--active", "--config", str(config))
    assert out == "" and "no API keys" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["keys", "create", "--tenant", "a b"], "tenant 'a b'"),
        (["keys", "create", "--tenant", "acme", "--personas", "Not A Persona"], "not persona"),
        (["keys", "create", "--tenant", "acme", "--personas", ","], "at least one persona"),
        (["keys", "revoke", "123456789abc"], "no API key '123456789abc'"),
    ],
)
def test_bad_key_commands_are_one_line_and_exit_2(config, capsys, argv, message) -> None:
    code, _, err = _run(capsys, *argv, "--config", str(config))
    assert code == 2 and message in err and err.count("\n") == 1


def test_generate_prints_a_token_without_storing_it(capsys) -> None:
    code, first, _ = _run(capsys, "keys", "generate")
    _, second, _ = _run(capsys, "keys", "generate")
    assert code == 0 and first.startswith("avk_") and first != second


def test_serve_refuses_open_on_the_network_before_starting(config, capsys) -> None:
    config.write_text(config.read_text() + "auth: {mode: open}\n")
    code, out, err = _run(capsys, "serve", "--config", str(config), "--host", "0.0.0.0")
    assert code == 2 and "without API keys" in err and "allow_open_network" in err
    assert "starting" not in out


def test_serve_announces_the_auth_mode(config, capsys) -> None:
    from deployments.serve_command import announce_auth

    settings = yaml.safe_load(config.read_text())
    assert announce_auth(AppConfig(**settings)) == "open"
    assert "WARNING: authentication is OFF" in capsys.readouterr().err
    keyed = AppConfig(**settings, auth={"mode": "keys"})
    assert announce_auth(keyed) == "keys"
    out, err = capsys.readouterr()
    assert "API keys required (0 active)" in out and "avatar keys create" in err


def test_talk_sends_the_api_key_as_a_bearer_token(monkeypatch, capsys) -> None:
    import httpx

    seen = {}

    class Refused:
        status_code = 401
        text = '{"error": "invalid API key"}'

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return b""

        def json(self):
            return json.loads(self.text)

    def fake_stream(method, url, **kwargs):
        seen.update(kwargs["headers"])
        return Refused()

    monkeypatch.setattr(httpx, "stream", fake_stream)
    monkeypatch.setenv("AVATAR_API_KEY", "avk_0123456789ab_fromenv")
    argv = ["talk", "--text", "hi", "--json", "--server", "http://127.0.0.1:1"]
    code, _, err = _run(capsys, *argv, "--api-key", "avk_0123456789ab_secret")
    assert code == 2 and "server error 401: invalid API key" in err
    assert seen == {"Authorization": "Bearer avk_0123456789ab_secret"}
    seen.clear()
    assert main(argv) == 2
    assert seen == {"Authorization": "Bearer avk_0123456789ab_fromenv"}
