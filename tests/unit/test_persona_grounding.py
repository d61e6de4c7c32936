"""Grounded generation: the per-sentence checker and its wiring into persona turn plans.

Fast: the model-free `HashingEmbedder` (word overlap) stands in for mpnet or MiniLM, so the
sentences here are verbatim statements (similarity ~1) or unrelated ones (~0). The measured
numbers with the real LLM and embedders come from `python -m loadtests.eval_grounding`, the
thresholds from `python -m loadtests.calibrate_grounding` (neither is a unit test).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import yaml

from services.core.config import AppConfig
from services.core.types import Source
from services.persona.embedder import HashingEmbedder
from services.persona.grounding import GroundingChecker, names_in, numbers_in, supported_share
from services.persona.library import PACKS_DIR
from services.persona.pack import load_pack
from services.persona.personas import PersonaTurns, as_turn_plan
from services.persona.runtime import PersonaRuntime
from services.persona.schema import GroundingSettings
from services.turn.orchestrator import TurnResult, run_turn
from services.turn.pipeline import Pipeline

SOURCES = (
    Source("kitchen.md#1", "kitchen.md", "We bake sourdough bread every morning at five.", 0.9),
    Source(
        "kitchen.md#2",
        "kitchen.md",
        "Our fish comes from the harbour boats. Lena Vogt runs the fish counter.",
        0.8,
    ),
)


def checker(**settings) -> GroundingChecker:
    return GroundingChecker(
        SOURCES,
        HashingEmbedder(),
        GroundingSettings(**settings),
        pre_filter=lambda s: "" if "real person" in s else s,
        names=("Theo Brandt", "Theo"),
    )


def test_numbers_and_names_are_extracted() -> None:
    assert numbers_in("We had 1,200 users, twelve staff and forty-two tablets in 2019.") == {
        "1200",
        "12",
        "40",
        "2",
        "2019",
    }
    assert numbers_in("One of us was there.") == set()  # "one" is a pronoun as often as not
    names = names_in("Fernwick hired Idris and I'm glad the AI-powered app left Duluth's office.")
    assert names == {"idris", "ai", "duluth"} - {"ai"}  # first word, I'm and AI are not claims


def test_supported_sentences_are_kept() -> None:
    check = checker()
    assert check("We bake sourdough bread every morning at five.") == (
        "We bake sourdough bread every morning at five."
    )
    assert check("Theo's fish comes from the harbour boats.")  # own name, words of a source
    assert check.counts["kept"] == 2 and supported_share(check.counts) == 1.0


@pytest.mark.parametrize(
    ("sentence", "reason"),
    [
        ("We bake sourdough bread every morning at six.", "number:6"),
        ("We bake sourdough bread every morning at 7.", "number:7"),
        ("The fish counter is run by Marco Rossi.", "name:marco"),
        ("I love skiing in the mountains on weekends.", "similarity:"),
    ],
)
def test_unsupported_sentences_are_replaced_by_the_sources_own_words(
    sentence: str, reason: str
) -> None:
    check = checker()
    spoken = check(sentence)
    assert spoken in {
        "Our fish comes from the harbour boats.",
        "Lena Vogt runs the fish counter.",
        "We bake sourdough bread every morning at five.",
    }
    decision = check.counts["sentences"][0]
    assert decision["outcome"] == "replaced" and decision["reason"].startswith(reason)


def test_a_replacement_is_never_repeated_in_a_reply() -> None:
    check = checker()
    invented = "We bake sourdough bread every morning at six."
    first, second, third, fourth = (check(invented) for _ in range(4))
    spoken = [s for s in (first, second, third, fourth) if s]
    assert first == "We bake sourdough bread every morning at five."
    assert len(spoken) == len(set(spoken)) == 3  # three cited sentences, then nothing is left
    assert fourth == "" and check.counts["dropped"] == 1 and check.counts["replaced"] == 3


def test_a_kept_source_sentence_is_not_repeated_as_a_replacement() -> None:
    check = checker()
    assert check("We bake sourdough bread every morning at five.")
    assert check("We bake sourdough bread every morning at six.") != (
        "We bake sourdough bread every morning at five."
    )


def test_drop_mode_says_nothing_instead() -> None:
    check = checker(unsupported="drop")
    assert check("Marco Rossi runs the fish counter.") == ""
    assert check.counts["dropped"] == 1 and check.counts["checked"] == 1


def test_the_persona_filter_runs_first() -> None:
    check = checker()
    assert check("I am a real person and we bake sourdough bread every morning at five.") == ""
    assert check.counts["filtered"] == 1 and check.counts["kept"] == 0


# -- wiring into turn plans ------------------------------------------------------------------


def demo_runtime(root: Path, answer_mode: str, grounding: dict | None = None) -> PersonaRuntime:
    pack = Path(shutil.copytree(PACKS_DIR / "maya-castellan", root / "maya-castellan"))
    config = yaml.safe_load((pack / "persona.yaml").read_text())
    config["retrieval"]["answer_mode"] = answer_mode
    if grounding is not None:
        config["grounding"] = grounding
    (pack / "persona.yaml").write_text(yaml.safe_dump(config))
    return PersonaRuntime.from_pack(load_pack(pack), HashingEmbedder(), root / "index")


QUESTION = "Why did you kill the web-only version of Fernwick?"


def test_generated_answers_are_checked_and_counted(tmp_path: Path) -> None:
    runtime = demo_runtime(tmp_path, "generate")
    plan = runtime.plan_turn(QUESTION, ())
    turn_plan = as_turn_plan(plan, runtime)
    counts = turn_plan.metadata["grounding"]
    assert counts["checked"] == 0 and counts["mode"] == "replace"
    assert turn_plan.sentence_filter(plan.sources[0].text.split(". ")[0] + ".")
    replaced = turn_plan.sentence_filter("We killed it in 1999 because Bill Gates asked us to.")
    assert replaced and "1999" not in replaced
    assert counts["kept"] == 1 and counts["replaced"] == 1 and counts["checked"] == 2


def test_quote_mode_canned_replies_and_disabled_grounding_are_untouched(tmp_path: Path) -> None:
    quoting = demo_runtime(tmp_path / "q", "quote")
    for plan in (quoting.plan_turn(QUESTION, ()), quoting.plan_turn("Are you a bot?", ())):
        turn_plan = as_turn_plan(plan, quoting)
        assert "grounding" not in turn_plan.metadata
        assert turn_plan.sentence_filter == quoting.filter_sentence
    off = demo_runtime(tmp_path / "off", "generate", {"enabled": False})
    turn_plan = as_turn_plan(off.plan_turn(QUESTION, ()), off)
    assert "grounding" not in turn_plan.metadata
    assert turn_plan.sentence_filter("We killed it in 1999.") == "We killed it in 1999."


def test_grounding_settings_are_bounded() -> None:
    with pytest.raises(ValueError):
        GroundingSettings(min_similarity=1.5)
    with pytest.raises(ValueError):
        GroundingSettings(unsupported="rewrite")


def test_a_turn_speaks_the_replacement_and_reports_the_counts(tmp_path: Path) -> None:
    runtime = demo_runtime(tmp_path, "generate")
    invented = "We shut it down in 1999. Bill Gates told us to."
    config = AppConfig(
        stages={
            "asr": {"backend": "fake"},
            "llm": {"backend": "fake", "options": {"reply": invented}},
            "tts": {"backend": "fake"},
            "render": {"backend": "fake"},
        }
    )
    pipeline = Pipeline.from_config(config)
    pipeline.load()
    turns = PersonaTurns(runtime, "session-1", None)

    async def run() -> list:
        return [
            e async for e in run_turn(pipeline.stages, pipeline.turn, text=QUESTION, planner=turns)
        ]

    events = asyncio.run(run())
    result = events[-1]
    assert isinstance(result, TurnResult)
    assert "1999" not in result.reply and "Gates" not in result.reply
    sources = {s.text for s in turns.plan.sources}
    assert all(any(part in text for text in sources) for part in result.reply.split(". ")[:1])
    counts = result.metadata["grounding"]
    assert counts["checked"] == 2 and counts["kept"] == 0
    assert counts["replaced"] + counts["dropped"] == 2


def test_the_threshold_can_differ_per_embedder(tmp_path: Path) -> None:
    settings = GroundingSettings(per_embedder={"minilm": {"min_similarity": 0.65}})
    assert settings.for_embedder("minilm").min_similarity == 0.65
    assert settings.for_embedder("mpnet") is settings
    with pytest.raises(ValueError, match="per_embedder"):
        GroundingSettings(per_embedder={"bert": {"min_similarity": 0.5}})
    grounding = {"min_similarity": 0.9, "per_embedder": {"hashing": {"min_similarity": 0.3}}}
    runtime = demo_runtime(tmp_path, "generate", grounding)
    turn_plan = as_turn_plan(runtime.plan_turn(QUESTION, ()), runtime)
    assert turn_plan.metadata["grounding"]["min_similarity"] == 0.3


def test_calibration_sweeps_thresholds_over_the_labelled_sentences() -> None:
    from loadtests.calibrate_grounding import LABELS, checker_scores, sweep

    # Supported, supported, unsupported, unsupported (the last one fails the number check).
    labels = [True, True, False, False]
    scores = [(True, 0.9), (True, 0.62), (True, 0.7), (False, 0.95)]
    rows = {r["min_similarity"]: r for r in sweep(labels, scores)["sweep"]}
    assert (rows[0.6]["kept"], rows[0.6]["precision"], rows[0.6]["recall"]) == (3, 0.667, 1.0)
    assert (rows[0.65]["kept"], rows[0.65]["precision"], rows[0.65]["recall"]) == (2, 0.5, 0.5)
    assert (rows[0.75]["kept"], rows[0.75]["precision"], rows[0.75]["recall"]) == (1, 1.0, 0.5)
    # F0.5 favours precision: 0.75-0.90 tie at 0.833, and the highest of them wins.
    assert sweep(labels, scores)["best"]["min_similarity"] == 0.9

    # The shipped labels cite statements of the demo pack, and every one gets a verdict.
    data = yaml.safe_load(LABELS.read_text(encoding="utf-8"))
    pack = load_pack(PACKS_DIR / data["persona"])
    items = data["sentences"]
    assert len(checker_scores(pack, HashingEmbedder(), items)) == len(items)
    assert any(item["supported"] for item in items) and not all(i["supported"] for i in items)
