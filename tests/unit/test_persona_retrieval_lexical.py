"""Word-level retrieval evidence (`services.persona.lexical`) and the decisions built on it.

Model-free: the runtime here uses the `HashingEmbedder`, so the meaning-based support check is
off and only the lexical parts (coverage, names and numbers, joining two statements) decide.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from services.persona.corpus import Statement, statement_views
from services.persona.embedder import HashingEmbedder
from services.persona.lexical import LexicalIndex, close_variant, terms
from services.persona.library import PACKS_DIR
from services.persona.pack import load_pack
from services.persona.runtime import PersonaRuntime

STATEMENTS = [
    Statement("a.md#1", "a.md", "We opened an office in Toronto in 2019.", "Growth"),
    Statement("a.md#2", "a.md", "Our CTO Idris built the sync engine on CRDTs.", None),
    Statement("a.md#3", "a.md", "For eighteen months we paid ourselves nothing.", None),
]


@pytest.fixture(scope="module")
def lexical() -> LexicalIndex:
    return LexicalIndex(STATEMENTS, ["Maya Castellan", "Fernwick"])


def test_terms_drop_stop_words_and_stem() -> None:
    assert terms("How are you pricing the inspections?") == ["price", "inspect"]


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("canada", "canadian", True),
        ("japan", "japanese", True),
        ("crdt", "crdts", True),
        ("austin", "austria", False),
        ("2019", "2018", False),
    ],
)
def test_close_variants(a: str, b: str, same: bool) -> None:
    assert close_variant(a, b) is same


def test_entities_are_names_and_numbers_not_the_persona(lexical: LexicalIndex) -> None:
    assert lexical.entities("Did Maya open a Fernwick office in Japan in 2015?") == [
        "japan",
        "2015",
    ]
    # A known proper noun counts at the start of a sentence; an ordinary word does not.
    assert lexical.entities("Idris wrote the sync engine?") == ["idris"]
    assert lexical.entities("Where is the office?") == []


def test_missing_entities_allow_variants_and_number_words(lexical: LexicalIndex) -> None:
    assert lexical.missing(["toronto", "2019"], [0]) == []
    assert lexical.missing(["18"], [2]) == []  # "eighteen months"
    assert lexical.missing(["japan"], [0, 1, 2]) == ["japan"]


def test_coverage_weights_rare_words_and_counts_headings_half(lexical: LexicalIndex) -> None:
    coverage = lexical.coverage("When did the Toronto office open?")
    assert coverage.argmax() == 0 and coverage[0] == pytest.approx(1.0)
    assert lexical.coverage("Tell me about growth")[0] == pytest.approx(0.5)
    assert lexical.unseen_share("Do you have a podcast?") == pytest.approx(1.0)


@pytest.fixture(scope="module")
def quoting(tmp_path_factory: pytest.TempPathFactory) -> PersonaRuntime:
    # Word-overlap scores are lower and spread wider than MiniLM's.
    root = tmp_path_factory.mktemp("packs")
    pack = Path(shutil.copytree(PACKS_DIR / "maya-castellan", root / "maya-castellan"))
    config = yaml.safe_load((pack / "persona.yaml").read_text())
    config["retrieval"]["join_margin"] = 0.3
    config["retrieval"]["per_embedder"] = {"hashing": {"min_score": 0.3, "lexical_weight": 0.35}}
    (pack / "persona.yaml").write_text(yaml.safe_dump(config))
    return PersonaRuntime.from_pack(load_pack(pack), HashingEmbedder(), root / "ix")


def test_a_name_no_statement_mentions_gets_no_answer(quoting: PersonaRuntime) -> None:
    # The export statement matches every other word of it.
    plan = quoting.plan_turn("Can agencies in Japan export their data?", ())
    assert plan.kind == "no_answer" and plan.reason == "uncovered:japan"
    plan = quoting.plan_turn("Did you raise a seed round in 2015?", ())
    assert plan.kind == "no_answer" and plan.reason == "uncovered:2015"
    assert quoting.plan_turn("Did you raise a seed round in 2019?", ()).kind == "answer"


def test_two_part_question_quotes_two_statements_verbatim(quoting: PersonaRuntime) -> None:
    plan = quoting.plan_turn(
        "Which devices do you support, and do small agencies pay half price?", ()
    )
    assert plan.kind == "answer" and plan.reason == "quote"
    first, second = plan.sources[:2]
    assert {first.id, second.id} == {"faq.txt#3", "faq.txt#5"}
    assert plan.canned_reply == f"{first.text} {second.text}"


def test_one_part_question_quotes_one_statement(quoting: PersonaRuntime) -> None:
    plan = quoting.plan_turn("Do small agencies pay half price?", ())
    assert plan.kind == "answer" and plan.canned_reply == plan.sources[0].text


def test_index_views_skip_the_bare_faq_question() -> None:
    faq = Statement("faq.txt#1", "faq.txt", "Q: Where are you based? A: In Duluth, Minnesota.")
    assert statement_views(faq) == [faq.text, "In Duluth, Minnesota."]
