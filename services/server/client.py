"""The browser client: where its static files are, and the persona list its picker shows.

The page itself is plain files under `web/` (ES modules, no build step, nothing fetched from
elsewhere); the router serves them at `/` (`deployments.web`). `persona_listing` is what
`GET /v1/personas` returns: the personas the caller's key may talk to, each with what the page
shows before a session opens (name, role, greeting, consent) and its corpus documents' titles
and dates, so a citation chip can name the document and when it was said.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.persona.consent import Consent
from services.persona.pack import PackError, load_pack
from services.persona.revocation import PersonaRevokedError
from services.server.auth import Principal

WEB_DIR = Path(__file__).resolve().parent / "web"


def consent_summary(consent: Consent) -> str:
    """One line a person reads: who agreed, when, to what, until when."""
    until = f", until {consent.expires_at.isoformat()}" if consent.expires_at else ""
    scope = ", ".join(consent.scope)
    granted = f"{consent.granted_by} on {consent.granted_at.isoformat()}"
    return f"Consent given by {granted}{until}: {scope}."


def persona_listing(personas: Any, principal: Principal) -> dict[str, Any]:
    """The personas `principal` may talk to (revoked and broken packs left out).

    Args:
        personas: `services.persona.personas.Personas`, or None when personas are disabled.
        principal: the caller; a key scoped to some personas sees only those.
    Returns:
        {"personas": [...], "default": id or None, "plain_chat": whether the key may open a
        session without a persona}.
    """
    plain_chat = principal.personas is None
    if personas is None:
        return {"personas": [], "default": None, "plain_chat": plain_chat}
    listed = []
    for summary in personas.registry.list():
        if principal.personas is not None and summary.id not in principal.personas:
            continue
        try:
            personas.check(summary.id)
            # The pack's files only: listing must not build an index or load a model.
            pack = load_pack(summary.path)
        except (PersonaRevokedError, PackError):
            continue
        config = pack.config
        listed.append(
            {
                "id": config.id,
                "name": config.display_name,
                "role": config.role,
                "greeting": config.greeting,
                "consent": config.consent.to_dict(),
                "consent_summary": consent_summary(config.consent),
                "documents": {
                    f.name: {
                        "title": f.meta.title,
                        "date": f.meta.date.isoformat() if f.meta.date else None,
                        "kind": f.meta.kind,
                        "url": f.meta.url,
                    }
                    for f in pack.files
                },
            }
        )
    default = personas.settings.default
    if default not in {p["id"] for p in listed}:
        default = None
    return {"personas": listed, "default": default, "plain_chat": plain_chat}
