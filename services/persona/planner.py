"""Personas in the turn pipeline: persona plans as orchestrator plans, with an audit trail.

`PersonaTurns` is what a session with a persona uses: it writes the user's words to the
transcript store *before* planning (nothing said is lost if a replica dies mid-turn), plans the
turn with the persona's guardrails and retrieval, and records the outcome afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.config import PersonaSettings
from services.orchestrator import TurnPlan
from services.persona.runtime import PersonaRuntime
from services.persona.runtime import TurnPlan as PersonaPlan
from services.persona.store import TranscriptStore
from services.types import ChatMessage


def as_turn_plan(plan: PersonaPlan, runtime: PersonaRuntime) -> TurnPlan:
    """The orchestrator's plan for a persona plan; metadata carries kind, sources, disclosure."""
    return TurnPlan(
        messages=plan.messages,
        canned_reply=plan.canned_reply,
        voice=plan.voice,
        speed=plan.speed,
        look=plan.look,
        metadata=plan.to_dict(),
        sentence_filter=runtime.filter_sentence,
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
    """The app's personas and their audit log, built from `PersonaSettings`.

    Nothing heavy happens here: packs are read, and the embedder and indexes are built, on the
    first turn that needs them.
    """

    def __init__(self, settings: PersonaSettings) -> None:
        from services.persona.embedder import create_embedder
        from services.persona.registry import PersonaRegistry
        from services.persona.store import open_store

        self.settings = settings
        self.registry = PersonaRegistry(
            settings.resolved_packs_dir(),
            settings.index_dir,
            embedder_factory=lambda: create_embedder(settings.embedder),
        )
        self.store = open_store(
            settings.transcripts_dsn,
            sqlite_path=Path(settings.transcripts_path).expanduser(),
        )

    def resolve(self, persona_id: str | None) -> str | None:
        """The persona a session gets; an unknown id raises `UnknownPersonaError`."""
        persona_id = persona_id or self.settings.default
        if persona_id is not None:
            self.registry.get(persona_id)
        return persona_id

    def turns(self, persona_id: str, session_id: str) -> PersonaTurns:
        return PersonaTurns(self.registry.get(persona_id), session_id, self.store)

    def disclosure(self, persona_id: str | None) -> dict[str, Any]:
        if persona_id is None:
            from services.conversation import PLAIN_DISCLOSURE

            return PLAIN_DISCLOSURE
        return self.registry.get(persona_id).greeting().disclosure

    def close(self) -> None:
        self.store.close()
