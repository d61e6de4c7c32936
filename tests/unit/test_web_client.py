"""The browser client's server side: the persona listing, and the static files it is made of."""

from __future__ import annotations

import re

import pytest

from services.core.config import PersonaSettings, StorageSettings
from services.persona.personas import Personas
from services.server.auth import ANONYMOUS, Principal
from services.server.client import WEB_DIR, persona_listing
from services.storage.audit import AuditLog
from services.storage.database import open_storage

DEMO = "maya-castellan"


@pytest.fixture
def storage(tmp_path, monkeypatch):
    monkeypatch.delenv("AVATAR_DATABASE_URL", raising=False)
    storage = open_storage(StorageSettings(sqlite_path=str(tmp_path / "avatar.sqlite3")))
    yield storage
    storage.close()


@pytest.fixture
def personas(tmp_path, storage):
    settings = PersonaSettings(index_dir=str(tmp_path / "index"), embedder="hashing")
    return Personas(settings, storage.transcripts)


def key(personas: set[str] | None) -> Principal:
    return Principal("acme", "k1", None if personas is None else frozenset(personas), False, False)


def test_an_open_cluster_lists_its_personas_with_consent_and_document_dates(personas):
    listing = persona_listing(personas, ANONYMOUS)
    assert listing["plain_chat"] is True
    maya = next(p for p in listing["personas"] if p["id"] == DEMO)
    assert maya["name"] == "Maya Castellan" and "AI" in maya["greeting"]
    assert maya["consent"]["granted_at"] and "statements" in maya["consent"]["scope"]
    assert maya["consent_summary"].startswith("Consent given by Maya Castellan")
    history = maya["documents"]["company-history.md"]
    assert history["date"] == "2023-04-18" and history["title"]
    assert maya["documents"]["faq.txt"]["date"] is None


def test_a_key_sees_only_the_personas_it_may_talk_to(personas):
    assert [p["id"] for p in persona_listing(personas, key({DEMO}))["personas"]] == [DEMO]
    other = persona_listing(personas, key({"someone-else"}))
    assert other == {"personas": [], "default": None, "plain_chat": False}
    assert persona_listing(None, key(None)) == {"personas": [], "default": None, "plain_chat": True}


def test_a_revoked_persona_is_not_listed(personas, storage):
    AuditLog(storage.transcripts.db).revoke(DEMO, reason="withdrawn", by="test")
    assert DEMO not in [p["id"] for p in persona_listing(personas, ANONYMOUS)["personas"]]


def test_the_page_is_self_contained():
    """Every file the page loads is in the package, and nothing comes from the network."""
    page = (WEB_DIR / "index.html").read_text()
    loaded = re.findall(r'(?:src|href)="(web/[^"]+)"', page)
    assert "web/app.js" in loaded and "web/style.css" in loaded
    for ref in loaded:
        assert (WEB_DIR.parent / ref).is_file(), ref
    for script in WEB_DIR.glob("*.js"):
        text = script.read_text()
        for module in re.findall(r'from "\./([\w.-]+)"', text):
            assert (WEB_DIR / module).is_file(), (script.name, module)
        for url in re.findall(r'new URL\("([\w.-]+)", import\.meta\.url\)', text):
            assert (WEB_DIR / url).is_file(), (script.name, url)
    for file in WEB_DIR.iterdir():
        assert not re.search(r"https?://", file.read_text()), f"{file.name} reaches the network"
