"""Personas in the turn pipeline: persona plans as orchestrator plans, with an audit trail.

`PersonaTurns` is what a session with a persona uses: it writes the user's words to the
transcript store *before* planning (nothing said is lost if a replica dies mid-turn), plans the
turn with the persona's guardrails and retrieval, and records the outcome afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from services.core.config import PersonaSettings
from services.core.types import ChatMessage
from services.persona import grounding
from services.persona.revocation import RevocationCheck
from services.persona.runtime import PersonaPlan, PersonaRuntime
from services.storage.audit import AuditLog
from services.storage.transcripts import TranscriptStore
from services.turn.orchestrator import TurnPlan

log = logging.getLogger(__name__)

# What a session without a persona discloses: an AI, speaking for nobody.
PLAIN_DISCLOSURE: dict[str, Any] = {"ai_generated": True, "persona_id": None}


def as_turn_plan(plan: PersonaPlan, runtime: PersonaRuntime) -> TurnPlan:
    """The orchestrator's plan for a persona plan; metadata carries kind, sources, disclosure.

    A generated answer with sources is checked sentence by sentence against them
    (`grounding.py`); its live counts are `metadata["grounding"]`, complete when the turn ends.
    """
    metadata = plan.to_dict()
    sentence_filter = runtime.filter_sentence
    if plan.kind == "answer" and plan.needs_llm and plan.sources:
        config = runtime.pack.config
        sentence_filter, counts = grounding.sentence_filter(
            plan.sources,
            runtime.embedder,
            config.grounding,
            runtime.filter_sentence,
            names=grounding.pack_names(config),
        )
        if counts is not None:
            metadata["grounding"] = counts
    return TurnPlan(
        messages=plan.messages,
        canned_reply=plan.canned_reply,
        voice=plan.voice,
        speed=plan.speed,
        look=plan.look,
        metadata=metadata,
        sentence_filter=sentence_filter,
    )


class PersonaTurns:
    """Plans and logs the turns of one session with one persona.

    Args:
        runtime: the persona.
        session_id: the conversation (for the audit log).
        store: the transcript store, or None to log nothing.
    """

    def __init__(
        self, runtime: PersonaRuntime, session_id: str, store: TranscriptStore | None
    ) -> None:
        self.runtime, self.session_id, self.store = runtime, session_id, store
        self.turn_id: str | None = None
        self.plan: PersonaPlan | None = None

    def greeting(self) -> TurnPlan:
        self.plan = self.runtime.greeting()
        return as_turn_plan(self.plan, self.runtime)

    def __call__(self, user_text: str, history: Sequence[ChatMessage]) -> TurnPlan:
        if self.store is not None:
            self.turn_id = self.store.begin_turn(
                self.runtime.pack.config.id, self.session_id, user_text
            )
        self.plan = self.runtime.plan_turn(user_text, history)
        return as_turn_plan(self.plan, self.runtime)

    def finish(self, reply: str, timings: dict[str, Any], status: str = "ok") -> None:
        if self.store is None or self.turn_id is None:
            return
        plan = self.plan
        self.store.finish_turn(
            self.turn_id,
            reply,
            plan.sources if plan else (),
            timings,
            status,
            kind=plan.kind if plan else None,
        )
        self.turn_id = None


class Personas:
    """The app's personas (from `PersonaSettings`) and the audit log their turns go to.

    Nothing heavy happens when it is built: packs are read, and the embedder and indexes built,
    by `warm` (the router, at start) or else on the first turn that needs them. A persona whose
    consent was revoked (`avatar persona revoke`) is refused by `resolve` and `turns` with
    `PersonaRevokedError` (`revocations`, None when there is no store to read them from).
    """

    def __init__(self, settings: PersonaSettings, store: TranscriptStore | None) -> None:
        from services.persona.embedder import create_embedder
        from services.persona.library import PersonaRegistry

        self.settings = settings
        self.registry = PersonaRegistry(
            settings.resolved_packs_dir(),
            settings.index_dir,
            embedder_factory=lambda: create_embedder(settings.embedder),
        )
        self.store = store
        self.revocations = (
            RevocationCheck(AuditLog(store.db), cache_s=settings.revocation_check_s)
            if store is not None
            else None
        )

    def warm(self) -> None:
        """Load every valid pack now: each index, the guard's vectors and the embedder's model.

        The router calls this before it reports ready, so that no session waits for a load
        (which runs on the event loop): with mpnet a first load embeds ~1,000 texts (~25 s on 2
        cores), later starts read them from `index_dir` (well under a second each). A pack that
        fails to load is logged and left to fail its sessions with the reason.
        """
        summaries = self.registry.list()
        for summary in summaries:
            try:
                self.registry.get(summary.id)
            except Exception as exc:  # noqa: BLE001 - one broken pack must not stop the router
                log.warning("persona %s not loaded at start: %s", summary.id, exc)
        if summaries:
            try:
                # Indexes and vectors read from disk need no model: load it for the first turn.
                self.registry.embedder.load()
            except Exception as exc:  # noqa: BLE001 - sessions report it with the reason
                log.warning("persona embedder not loaded at start: %s", exc)

    def check(self, persona_id: str | None) -> None:
        """PersonaRevokedError if the persona's consent was revoked."""
        if self.revocations is not None:
            self.revocations.check(persona_id)

    def resolve(self, persona_id: str | None) -> str | None:
        """The persona a session gets; an unknown id raises `UnknownPersonaError`, a revoked one
        `PersonaRevokedError` (even with its pack still on disk)."""
        persona_id = persona_id or self.settings.default
        if persona_id is not None:
            self.check(persona_id)
            self.registry.get(persona_id)
        return persona_id

    def turns(
        self, persona_id: str, session_id: str, store: TranscriptStore | None = None
    ) -> PersonaTurns:
        """The planner of a session's turns, logging to `store` (default: this one's store).

        A `Conversation` passes its sessions' audit log: a session's history is read from
        the store its turns are logged to, so they must be the same. A revoked persona raises
        `PersonaRevokedError`: an open session's next turn is refused.
        """
        self.check(persona_id)
        return PersonaTurns(self.registry.get(persona_id), session_id, store or self.store)

    def disclosure(self, persona_id: str | None) -> dict[str, Any]:
        if persona_id is None:
            return PLAIN_DISCLOSURE
        return self.registry.get(persona_id).greeting().disclosure

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
