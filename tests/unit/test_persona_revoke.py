"""Consent revocation end to end on SQLite and fake backends: `avatar persona revoke` records
it and erases the persona's transcripts (the erasure recorded), and serving stops at once: a
new session is refused with 410 and the reason, an open session's next turn too, and the
database itself refuses the persona's turns. Also the CLI's purge (pack retention_days) and
export, and the revocation cache of a router replica.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
import yaml

from services.commands.persona import main as persona_cli
from services.core.config import AppConfig, PersonaSettings, StorageSettings
from services.persona.library import PACKS_DIR
from services.persona.personas import Personas
from services.persona.revocation import PersonaRevokedError, RevocationCheck
from services.server.auth import Principal
from services.server.conversation import Conversation
from services.server.requests import ApiError, TurnInput
from services.storage.database import open_storage
from services.turn.pipeline import Pipeline

DEMO = "maya-castellan"


@pytest.fixture
def packs(tmp_path: Path) -> Path:
    packs = tmp_path / "packs"
    shutil.copytree(PACKS_DIR / DEMO, packs / DEMO)
    return packs


@pytest.fixture
def config_path(tmp_path: Path, packs: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("AVATAR_DATABASE_URL", raising=False)
    path = tmp_path / "app.yaml"
    storage = {"sqlite_path": str(tmp_path / "avatar.sqlite3"), "retention_days": 365}
    personas = {"packs_dir": str(packs), "index_dir": str(tmp_path / "index")}
    path.write_text(yaml.safe_dump({"storage": storage, "personas": personas}))
    return path


@pytest.fixture
def served(tmp_path: Path, packs: Path, config_path: Path):
    """A Conversation over the config's database (what a router replica holds) and its storage."""
    config = AppConfig(
        stages={s: {"backend": "fake"} for s in ("asr", "llm", "tts", "render")},
        storage=StorageSettings(sqlite_path=str(tmp_path / "avatar.sqlite3")),
    )
    pipeline = Pipeline.from_config(config)
    pipeline.load()
    storage = open_storage(config.storage)
    settings = PersonaSettings(
        packs_dir=str(packs),
        index_dir=str(tmp_path / "index"),
        embedder="hashing",
        revocation_check_s=0,  # re-read at every check: the test revokes between turns
    )
    personas = Personas(settings, storage.transcripts)
    yield Conversation(
        pipeline.stages, pipeline.turn, storage.sessions, fps=25.0, personas=personas
    )
    storage.close()


def _turn(conversation: Conversation, session, text: str) -> list[dict]:
    async def run():
        return [e async for e in conversation.turn_events(session, TurnInput(text=text))]

    return asyncio.run(run())


def _cli(*argv: str, capsys) -> tuple[int, str, str]:
    code = persona_cli(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_revoke_erases_records_and_stops_serving_at_once(served, config_path, capsys) -> None:
    conversation = served
    storage_log = conversation.sessions.transcripts
    session = conversation.open_session(DEMO)
    assert _turn(conversation, session, "Are you a real person?")[-1]["type"] == "done"
    plain = conversation.open_session(None)
    assert _turn(conversation, plain, "Hello")[-1]["type"] == "done"
    assert len(storage_log.turns(persona_id=DEMO)) == 1

    code, out, err = _cli(
        "revoke", DEMO, "--reason", "consent withdrawn by the person", "--by", "dpo",
        "--config", str(config_path), capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["persona_id"] == DEMO and result["turns_deleted"] == 1
    assert result["revoked_by"] == "dpo"

    # Transcripts erased, and the erasure recorded: who, why, how many rows.
    assert storage_log.turns(persona_id=DEMO) == []
    assert len(storage_log.turns(session_id=plain.id)) == 1  # other turns untouched
    code, out, _ = _cli("erasures", "--config", str(config_path), capsys=capsys)
    (erasure,) = [json.loads(line) for line in out.splitlines()]
    assert (erasure["kind"], erasure["persona_id"], erasure["rows_deleted"]) == (
        "revocation",
        DEMO,
        1,
    )
    assert erasure["requested_by"] == "dpo" and erasure["reason"].startswith("consent withdrawn")

    # Serving stops: a new session gets 410 with the reason (even with the pack on disk) ...
    with pytest.raises(ApiError) as refused:
        conversation.open_session(DEMO)
    assert refused.value.status == 410
    assert "consent was revoked" in refused.value.reason and "withdrawn" in refused.value.reason
    # ... and the open session's next turn is refused with the same, before any stage runs.
    events = _turn(conversation, session, "One more question")
    assert [(e["type"], e["status"]) for e in events] == [("error", 410)]
    assert "consent was revoked" in events[0]["reason"]
    assert conversation.sessions.history(session.id) == []
    # The database refuses the persona's turns even from a replica whose cache is stale.
    with pytest.raises(PersonaRevokedError):
        storage_log.begin_turn(DEMO, session.id, "from a replica that has not heard yet")
    assert _turn(conversation, plain, "Still there?")[-1]["type"] == "done"  # others served

    # Revoking again is idempotent: the first record stays, nothing left to erase.
    code, out, _ = _cli(
        "revoke", DEMO, "--reason", "again", "--config", str(config_path), capsys=capsys
    )
    assert code == 0 and json.loads(out)["turns_deleted"] == 0
    assert json.loads(out)["reason"] == "consent withdrawn by the person"


def test_revoke_refuses_a_malformed_id_or_an_empty_reason(config_path, capsys) -> None:
    code, _, err = _cli("revoke", "../etc", "--reason", "x", "--config", str(config_path),
                        capsys=capsys)  # fmt: skip
    assert code == 2 and "not a persona id" in err
    code, _, err = _cli("revoke", DEMO, "--reason", " ", "--config", str(config_path),
                        capsys=capsys)  # fmt: skip
    assert code == 2 and "reason" in err


def test_revocation_is_cached_for_at_most_cache_s(config_path) -> None:
    from services.core.config import load_app_config

    now = [0.0]
    with open_storage(load_app_config(config_path).storage) as storage:
        check = RevocationCheck(storage.audit, cache_s=2.0, clock=lambda: now[0])
        check.check(DEMO)  # reads the (empty) list
        storage.audit.revoke(DEMO, reason="withdrawn", by="dpo")
        now[0] = 1.0
        check.check(DEMO)  # within cache_s: the list read at 0 s
        now[0] = 2.5
        with pytest.raises(PersonaRevokedError, match="withdrawn"):
            check.check(DEMO)
        check.check(None)  # plain chat is never revoked


def test_purge_follows_the_packs_retention_days(config_path, packs, capsys) -> None:
    from services.core.config import load_app_config

    pack = packs / DEMO / "persona.yaml"
    pack.write_text(pack.read_text() + "retention_days: 30\n")
    with open_storage(load_app_config(config_path).storage) as storage:
        from tests.unit.test_storage_audit import _old_turn

        for days in (10, 60, 400):
            _old_turn(storage, DEMO, "m", days)
            _old_turn(storage, None, "plain", days)
    code, out, err = _cli("purge", "--config", str(config_path), capsys=capsys)
    assert code == 0, err
    # The pack keeps 30 days; plain chat the cluster's storage.retention_days (365).
    assert json.loads(out) == {"turns_deleted": {"(plain chat)": 1, DEMO: 2}}


def test_export_writes_the_session_and_its_turns(served, config_path, tmp_path, capsys) -> None:
    session = served.open_session(DEMO, Principal("acme", "k1", None, True, True))
    _turn(served, session, "Are you a real person?")
    out_file = tmp_path / "export.json"
    code, out, err = _cli("export", "--session", session.id, "--out", str(out_file),
                          "--config", str(config_path), capsys=capsys)  # fmt: skip
    assert code == 0, err
    export = json.loads(out_file.read_text())
    assert export["session"]["owner_key_id"] == "k1"
    (turn,) = export["turns"]
    assert turn["user_text"] == "Are you a real person?" and turn["status"] == "ok"
    assert turn["kind"] == "disclosure" and "timings" in turn and "sources" in turn
    # Over HTTP: admin keys only, and only their own tenant's sessions.
    assert served.export(session.id, Principal("acme", "k2", None, True, True))["turns"]
    with pytest.raises(ApiError) as denied:
        served.export(session.id, Principal("acme", "k1", None, True, False))
    assert denied.value.status == 403
    with pytest.raises(ApiError) as hidden:
        served.export(session.id, Principal("other", "k3", None, True, True))
    assert hidden.value.status == 404
    code, _, err = _cli("export", "--session", "nope", "--config", str(config_path), capsys=capsys)
    assert code == 2 and "unknown session" in err
