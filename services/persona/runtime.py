"""Plan each turn of one persona: which path it takes, what the LLM sees, what grounds it.

`PersonaRuntime.plan_turn` decides, in code and before any generation:

1. unsafe request -> `refusal` (canned, persona style; self-harm gets a supportive reply);
2. "are you real / a bot / really Maya?" -> `disclosure` (canned: it is an AI version);
3. a topic the person declines -> `refusal`;
4. small talk -> `answer` with no sources (nothing factual to ground);
5. otherwise retrieve; if the best statement is below the pack's `min_score` -> `no_answer`
   (the twin says it has nothing on that instead of letting a 135M model invent a biography);
6. else `answer`: a short system prompt with the top statements verbatim + recent history.

Steps 2 and 3 also match by meaning (similarity to example questions) when the embedder is
semantic, but only where the example is closer than anything in the corpus, so a real question
about the person's work that shares words with an avoided topic still gets answered.

Every plan carries machine-readable disclosure metadata and the persona's voice and look, so the
pipeline forwards them to TTS and render as request parameters.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.core.types import AvatarLook, ChatMessage, Source
from services.persona import guardrails
from services.persona.embedder import Embedder
from services.persona.index import StatementIndex, pack_rewriter
from services.persona.pack import PersonaPack

KINDS = ("answer", "greeting", "disclosure", "refusal", "no_answer")

# Prototype "who am I talking to" questions for the meaning-based disclosure check; the regexes
# in `guardrails` are the primary detector, these catch phrasings they miss.
_DISCLOSURE_EXAMPLES = (
    "Are you a real person?",
    "Am I talking to a bot?",
    "Is this really {name}?",
    "Are you an AI?",
    "Is a human answering me right now?",
    "Is this a recording or is it live?",
    "Are you actually {name} or a computer?",
    "Is there a person on the other side of this conversation?",
)


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


@dataclass
class _Topic:
    """An avoided topic compiled for matching: keyword regex and example embeddings."""

    name: str
    reply: str
    pattern: Any
    examples: np.ndarray | None = field(default=None)


class PersonaRuntime:
    """One persona, ready to plan turns: pack + statement index + embedder.

    Args:
        pack: The validated persona pack.
        index: Its statement index (current for the pack and `embedder`).
        embedder: Embeds user turns; must be the one that built `index`.
    """

    def __init__(self, pack: PersonaPack, index: StatementIndex, embedder: Embedder) -> None:
        if not index.is_current(pack, embedder):
            raise ValueError(f"index for {pack.id!r} is stale or from another embedder")
        self.pack = pack
        self.index = index
        self.embedder = embedder
        config = pack.config
        self.persona_id = config.id
        self._retrieval = config.retrieval
        self._rewrite = pack_rewriter(pack)
        names = [config.display_name, config.name]
        self._disclosure_re = guardrails.disclosure_pattern(names)
        self._human_filter = guardrails.HumanClaimFilter(names)
        self._topics = [
            _Topic(
                name=t.name,
                reply=t.reply or config.replies.refusal,
                pattern=guardrails.keyword_pattern(t.keywords),
                examples=(
                    embedder.embed([self._rewrite(x) for x in t.examples])
                    if t.examples and embedder.semantic
                    else None
                ),
            )
            for t in config.topics_to_avoid
        ]
        examples = [self._rewrite(q.format(name=config.name)) for q in _DISCLOSURE_EXAMPLES]
        self._disclosure_examples = embedder.embed(examples) if embedder.semantic else None
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
        return cls(pack, StatementIndex.load_or_build(pack, embedder, index_dir), embedder)

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
        replies = self.pack.config.replies
        text = user_text.strip()
        if guardrails.word_count(text) == 0:
            return self._plan("no_answer", reply=replies.not_heard, reason="empty")
        category = guardrails.unsafe_category(text)
        if category is not None:
            reply = guardrails.SELF_HARM_REPLY if category == "self_harm" else replies.unsafe
            return self._plan("refusal", reply=reply, reason=f"unsafe:{category}")
        norm = guardrails.normalise(text)
        if self._disclosure_re.search(norm):
            return self._plan("disclosure", reply=replies.disclosure, reason="disclosure:pattern")
        for topic in self._topics:
            if topic.pattern is not None and topic.pattern.search(norm):
                return self._plan("refusal", reply=topic.reply, reason=f"topic:{topic.name}")
        if guardrails.is_small_talk(text):
            return self._plan(
                "answer", messages=self._messages(text, history, ()), reason="small_talk"
            )

        started = time.perf_counter()
        query = self.embedder.embed_one(self._rewrite(self._query_text(text, history)))
        hits = self.index.search(query, self._retrieval.top_k)
        retrieval_ms = (time.perf_counter() - started) * 1000.0
        best = hits[0].score if hits else 0.0

        # Meaning-based checks only win over the corpus: a question that is closer to something
        # the person actually said is a question about their work, not an avoided topic.
        threshold = self._retrieval.topic_similarity
        if self._disclosure_examples is not None:
            score = float(np.max(self._disclosure_examples @ query))
            if score >= threshold and score > best:
                return self._plan(
                    "disclosure",
                    reply=replies.disclosure,
                    reason=f"disclosure:similar:{score:.2f}",
                    retrieval_ms=retrieval_ms,
                )
        for topic in self._topics:
            if topic.examples is None:
                continue
            score = float(np.max(topic.examples @ query))
            if score >= threshold and score > best:
                return self._plan(
                    "refusal",
                    reply=topic.reply,
                    reason=f"topic:{topic.name}:similar:{score:.2f}",
                    retrieval_ms=retrieval_ms,
                )
        if best < self._retrieval.min_score:
            return self._plan(
                "no_answer",
                reply=replies.no_answer,
                reason=f"low_score:{best:.2f}",
                retrieval_ms=retrieval_ms,
            )
        sources = tuple(hits)
        if self._retrieval.answer_mode == "quote":
            return self._plan(
                "answer",
                reply=sources[0].text,
                sources=sources,
                reason="quote",
                retrieval_ms=retrieval_ms,
            )
        grounding = sources[: self._retrieval.prompt_statements]
        return self._plan(
            "answer",
            messages=self._messages(text, history, grounding),
            sources=sources,
            retrieval_ms=retrieval_ms,
        )

    def filter_sentence(self, sentence: str) -> str:
        """Post-filter one generated sentence: "" when it claims to be human (or is unsafe)."""
        return self._human_filter(sentence)

    # -- prompt ------------------------------------------------------------------------------

    @staticmethod
    def _query_text(text: str, history: Sequence[ChatMessage]) -> str:
        # "Why?" or "and then?" carry no topic of their own: retrieve with the previous question.
        if guardrails.word_count(text) < 4:
            for message in reversed(history):
                if message.role == "user":
                    return f"{message.content} {text}"
        return text

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
