"""`Personas.warm`: the router loads every pack before it reports ready, so no session waits for
an index or the guard's vectors to be built on the event loop. Model-free (hashing embedder)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from services.core.config import PersonaSettings
from services.persona.library import PACKS_DIR
from services.persona.personas import Personas


def test_warm_loads_every_valid_pack_and_logs_a_broken_one(tmp_path: Path, caplog) -> None:
    packs = tmp_path / "packs"
    shutil.copytree(PACKS_DIR / "maya-castellan", packs / "maya-castellan")
    broken = packs / "broken"
    shutil.copytree(PACKS_DIR / "maya-castellan", broken)
    config = broken / "persona.yaml"
    config.write_text(config.read_text().replace("id: maya-castellan", "id: broken"))
    for corpus_file in (broken / "corpus").iterdir():
        corpus_file.unlink()  # a valid persona.yaml with no statements: the pack fails to load
    personas = Personas(
        PersonaSettings(packs_dir=str(packs), index_dir=str(tmp_path / "ix"), embedder="hashing"),
        None,
    )
    with caplog.at_level(logging.INFO):
        personas.warm()
    assert "maya-castellan" in personas.registry._cache
    assert (tmp_path / "ix" / "maya-castellan").is_dir()
    assert "persona maya-castellan loaded in" in caplog.text
    assert "persona broken not loaded at start" in caplog.text  # and the router still starts
