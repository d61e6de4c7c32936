"""Plan each turn of one persona: which path it takes, what the LLM sees, what grounds it.

`PersonaRuntime.plan_turn` decides, in code and before any generation:

1. unsafe request -> `refusal` (canned, persona style; self-harm gets a supportive reply);
2. "are you real / a bot / really Maya?" -> `disclosure` (canned: it is an AI version);
3. a topic the person declines -> `refusal`;
4. small talk -> `answer` with no sources (nothing factual to ground);
5. otherwise retrieve (dense + lexical, `retrieval.py`); when no statement answers -> `no_answer`
   (the twin says it has nothing on that instead of putting words in the person's mouth): the
   best score is below the pack's `min_score`, or the question names a person, place or number
   no good statement names;
6. else `answer`: a short system prompt with the top statements verbatim + recent history.

Steps 1-3 are the persona's `Guard` (`guard.py`: by wording, and by meaning right after
retrieval); step 5 is its `Retriever` (`retrieval.py`). This module only orders them and builds
the plans and the prompt.

Every plan carries machine-readable disclosure metadata and the persona's voice and look, so the
pipeline forwards them to TTS and render as request parameters.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from services.core.types import AvatarLook, ChatMessage, Source
from services.persona import guardrails, vector_cache
from services.persona.embedder import Embedder
from services.persona.guard import Guard
from services.persona.index import StatementIndex, pack_rewriter
from services.persona.pack import PersonaPack
from services.persona.retrieval import Retriever

KINDS = ("answer", "greeting", "disclosure", "refusal", "no_answer")


@dataclass(frozen=True)
class PersonaPlan:
    """What the persona decided for one turn, before it becomes the orchestrator's plan.

    Not to be confused with `services.turn.orchestrator.TurnPlan`, the stage-level plan the
    pipeline executes: `services.persona.personas.as_turn_plan` converts this one into that one,
    carrying `to_dict()` along as metadata.

    Attributes:
        persona_id: The persona that answers.
        kind: "answer" | "greeting" | "disclosure" | "refusal" | "no_answer".
        messages: Chat for the LLM when `kind == "answer"`, else None.
        canned_reply: Text spoken as-is (no LLM call) for every other kind.
        sources: Statements that ground the answer, best first (empty unless "answer").
        disclosure: Machine-readable AI disclosure, sent to the client with every response.
        voice: Piper voice for TTS, None = the replica's default.
        speed: TTS speaking rate.
        look: Render parameters.
        reason: Why a guarded path was taken ("unsafe:violence", "topic:politics",
            "disclosure:pattern", "low_score:0.31", "small_talk"), for the audit log.
        retrieval_ms: Time spent embedding the turn and searching the index.
    """

    persona_id: str
    kind: str
    messages: tuple[ChatMessage, ...] | None
    canned_reply: str | None
    sources: tuple[Source, ...]
    disclosure: dict[str, Any]
    voice: str | None
    speed: float
    look: AvatarLook
    reason: str | None = None
    retrieval_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown plan kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if (self.messages is None) == (self.canned_reply is None):
            raise ValueError("set exactly one of messages and canned_reply")
        if self.kind != "answer" and self.messages is not None:
            raise ValueError("only an 'answer' goes to the LLM")

    @property
    def needs_llm(self) -> bool:
        """True when the reply is generated (an "answer" with a prompt), not canned."""
        return self.messages is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary for the client (no prompt: it holds nothing the client needs)."""
        return {
            "persona_id": self.persona_id,
            "kind": self.kind,
            "canned_reply": self.canned_reply,
            "sources": [s.to_dict() for s in self.sources],
            "disclosure": copy.deepcopy(self.disclosure),
            "voice": self.voice,
            "speed": self.speed,
            "reason": self.reason,
            "retrieval_ms": round(self.retrieval_ms, 3),
        }


class PersonaRuntime:
    """One persona, ready to plan turns: pack + statement index + embedder.

    Args:
        pack: The validated persona pack.
        index: Its statement index (current for the pack and `embedder`).
        embedder: Embeds user turns; must be the one that built `index`.
        index_dir: The indexes' folder, where the guard's example vectors are kept too (None =
            embed them on every start).
    """

    def __init__(
        self,
        pack: PersonaPack,
        index: StatementIndex,
        embedder: Embedder,
        index_dir: str | Path | None = None,
    ) -> None:
        if not index.is_current(pack, embedder):
            raise ValueError(f"index for {pack.id!r} is stale or from another embedder")
        # Thresholds are on the embedder's scale: the pack may hold one set per embedder.
        retrieval = pack.config.retrieval.for_embedder(embedder.key)
        checks = pack.config.grounding.for_embedder(embedder.key)
        if retrieval is not pack.config.retrieval or checks is not pack.config.grounding:
            update = {"retrieval": retrieval, "grounding": checks}
            pack = replace(pack, config=pack.config.model_copy(update=update))
        self.pack = pack
        self.index = index
        self.embedder = embedder
        config = pack.config
        self.persona_id = config.id
        self._retrieval = config.retrieval
        rewrite = pack_rewriter(pack)
        # The guard's example vectors are kept beside the indexes (~25 s to embed with mpnet).
        examples = vector_cache.VectorCache(
            embedder, Path(index_dir) / vector_cache.FOLDER if index_dir is not None else None
        )
        self.guard = Guard(
            pack, embedder, rewrite, corpus=index.embeddings, examples=examples.embed
        )
        self.retriever = Retriever(pack, index, embedder, rewrite)
        self._disclosure = {
            "ai_generated": True,
            "synthetic_voice": True,
            "synthetic_video": True,
            "persona_id": config.id,
            "display_name": config.display_name,
            "notice": f"You are talking to an AI version of {config.display_name}, not the person.",
            "consent": config.consent.to_dict(),
        }

    @classmethod
    def from_pack(
        cls, pack: PersonaPack, embedder: Embedder, index_dir: str | Path | None = None
    ) -> PersonaRuntime:
        """Build a runtime, loading the stored index or (re)building a stale one."""
        index = StatementIndex.load_or_build(pack, embedder, index_dir)
        return cls(pack, index, embedder, index_dir)

    # -- plans -------------------------------------------------------------------------------

    def _plan(
        self,
        kind: str,
        *,
        reply: str | None = None,
        messages: tuple[ChatMessage, ...] | None = None,
        sources: tuple[Source, ...] = (),
        reason: str | None = None,
        retrieval_ms: float = 0.0,
    ) -> PersonaPlan:
        disclosure = copy.deepcopy(self._disclosure)
        disclosure["grounded"] = bool(sources)
        disclosure["source_ids"] = [s.id for s in sources]
        return PersonaPlan(
            persona_id=self.persona_id,
            kind=kind,
            messages=messages,
            canned_reply=reply,
            sources=sources,
            disclosure=disclosure,
            voice=self.pack.voice,
            speed=self.pack.config.voice.speed,
            look=self.pack.look,
            reason=reason,
            retrieval_ms=retrieval_ms,
        )

    def greeting(self) -> PersonaPlan:
        """The session-start turn; the pack's greeting is validated to disclose the AI."""
        return self._plan("greeting", reply=self.pack.config.greeting, reason="session_start")

    def plan_turn(self, user_text: str, history: Sequence[ChatMessage] = ()) -> PersonaPlan:
        """Decide how to answer `user_text`, given the conversation so far (oldest first)."""
        text = user_text.strip()
        if guardrails.word_count(text) == 0:
            return self._plan("no_answer", reply=self.pack.config.replies.not_heard, reason="empty")
        verdict = self.guard.by_wording(text)
        if verdict is not None:
            return self._plan(verdict.kind, reply=verdict.reply, reason=verdict.reason)
        if guardrails.is_small_talk(text):
            return self._plan(
                "answer", messages=self._messages(text, history, ()), reason="small_talk"
            )

        found = self.retriever.retrieve(text, history)
        verdict = self.guard.by_meaning(found.query, found.best)
        if verdict is not None:
            return self._plan(
                verdict.kind,
                reply=verdict.reply,
                reason=verdict.reason,
                retrieval_ms=found.retrieval_ms,
            )
        answer = self.retriever.answer(text, found)
        if not answer.sources:
            return self._plan(
                "no_answer",
                reply=self.pack.config.replies.no_answer,
                reason=answer.reason,
                retrieval_ms=found.retrieval_ms,
            )
        if answer.quote is not None:
            return self._plan(
                "answer",
                reply=answer.quote,
                sources=answer.sources,
                reason="quote",
                retrieval_ms=found.retrieval_ms,
            )
        grounding = answer.sources[: self._retrieval.prompt_statements]
        return self._plan(
            "answer",
            messages=self._messages(text, history, grounding),
            sources=answer.sources,
            retrieval_ms=found.retrieval_ms,
        )

    def filter_sentence(self, sentence: str) -> str:
        """Post-filter one generated sentence: "" when it claims to be human (or is unsafe)."""
        return self.guard.filter_sentence(sentence)

    # -- prompt ------------------------------------------------------------------------------

    def system_prompt(self, grounding: Sequence[Source]) -> str:
        """Short on purpose: a 135M model follows quoted facts better than long instructions."""
        config = self.pack.config
        name = config.name
        lines = [
            f"You are an AI version of {config.display_name}, {config.role}. "
            f"Speak as {name}, in first person. {config.speaking_style}",
        ]
        if grounding:
            lines.append(f"Answer in one to three short sentences, using only what {name} said:")
            lines.extend(f'- "{s.text}"' for s in grounding)
        else:
            lines.append("Reply in one short, friendly sentence. Do not state facts.")
        return "\n".join(lines)

    def _messages(
        self, text: str, history: Sequence[ChatMessage], grounding: Sequence[Source]
    ) -> tuple[ChatMessage, ...]:
        keep = self._retrieval.history_messages
        earlier = [m for m in history if m.role in ("user", "assistant")]
        earlier = earlier[-keep:] if keep else []
        return (
            ChatMessage("system", self.system_prompt(grounding)),
            *earlier,
            ChatMessage("user", text),
        )

    def describe(self) -> dict[str, Any]:
        """Summary for listings and health checks."""
        config = self.pack.config
        return {
            "id": config.id,
            "display_name": config.display_name,
            "role": config.role,
            "statements": len(self.index),
            "files": len(self.pack.files),
            "embedder": self.index.embedder_name,
            "corpus_hash": self.pack.corpus_hash[:12],
            "voice": self.pack.voice,
            "speed": config.voice.speed,
        }
