"""Choose `retrieval.min_score` for a pack and embedder from a question file; print JSON.

`min_score` decides when the twin says "I haven't said" instead of quoting its best statement.
This sweeps it over a question file's `dev` split (the same files `eval_persona` reads) and
picks the threshold with the best no-answer balance, min(precision, recall), the higher top-1
on a tie. It then reports what that threshold, and the pack's configured one, give on the
held-out split, and how far any threshold could go there (`ceiling`):

- `top_1_if_all_answered`: top-1 with `min_score` 0, where no question is declined for its
  score: the most a perfect "is there an answer?" decision could reach, as the statement a turn
  leads with does not depend on the threshold;
- `best_threshold_on_held_out`: the threshold chosen on the held-out split itself, a bound for
  reference (choosing a setting on it would make it tuning data);
- `score_auc`: how well the best hybrid score separates answerable from out-of-corpus questions
  (1.0: some threshold separates them all).

Only the answer/no-answer decision moves with the threshold; questions the guard refuses,
discloses or takes for small talk keep that plan, as in `plan_turn`. Metrics are those of
`eval_persona` (`grounding.top_1_hit_rate`, `no_answer.precision` / `recall`).

    python -m loadtests.calibrate_retrieval [--embedder mpnet] [--questions FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from loadtests.guard_signals import auc
from loadtests.persona_files import QUESTIONS, add_pack_arguments, open_registry, read
from services.persona.index import pack_rewriter
from services.persona.library import PersonaRegistry
from services.persona.retrieval import Found, Retriever
from services.persona.runtime import PersonaRuntime

THRESHOLDS = tuple(round(0.20 + 0.01 * i, 2) for i in range(61))  # 0.20 .. 0.80


@dataclass(frozen=True)
class Asked:
    """One factual or out-of-corpus question, planned once.

    Attributes:
        text: The question.
        expect: The statement id that answers it (None: out of corpus).
        fixed: The plan kind when the guard or small talk decided it (the threshold does not
            apply), else None.
        found: What retrieval found (None when `fixed`).
    """

    text: str
    expect: str | None
    fixed: str | None
    found: Found | None


def ask(runtime: PersonaRuntime, questions: dict) -> list[Asked]:
    """Plan every factual and out-of-corpus question of one split once."""
    asked = []
    items = [(item["q"], item["expect"]) for item in questions.get("factual") or ()]
    items += [(q, None) for q in questions.get("out_of_corpus") or ()]
    for text, expect in items:
        plan = runtime.plan_turn(text, ())
        # Only retrieval's own decision (a quote or "no answer" from its checks) moves.
        decided_by_retrieval = plan.kind in ("answer", "no_answer") and plan.reason not in (
            "small_talk",
            "empty",
        )
        if decided_by_retrieval:
            asked.append(Asked(text, expect, None, runtime.retriever.retrieve(text, ())))
        else:
            asked.append(Asked(text, expect, plan.kind, None))
    return asked


def retriever_at(runtime: PersonaRuntime, min_score: float) -> Retriever:
    """The runtime's retriever with another `min_score` (everything else as configured)."""
    config = runtime.pack.config
    retrieval = config.retrieval.model_copy(update={"min_score": min_score})
    pack = replace(runtime.pack, config=config.model_copy(update={"retrieval": retrieval}))
    return Retriever(pack, runtime.index, runtime.embedder, pack_rewriter(pack))


def score(asked: list[Asked], retriever: Retriever) -> dict:
    """`eval_persona`'s top-1 and no-answer figures for one threshold."""
    top_1 = factual = ooc = ooc_declined = factual_declined = 0
    for item in asked:
        if item.fixed is not None:
            kind, first = item.fixed, None
        else:
            answer = retriever.answer(item.text, item.found)
            kind = "answer" if answer.sources else "no_answer"
            first = answer.sources[0].id if answer.sources else None
        if item.expect is None:
            ooc += 1
            ooc_declined += kind == "no_answer"
        else:
            factual += 1
            top_1 += kind == "answer" and first == item.expect
            factual_declined += kind == "no_answer"
    declined = ooc_declined + factual_declined
    return {
        "top_1": round(top_1 / factual, 4) if factual else 0.0,
        "no_answer_precision": round(ooc_declined / declined, 4) if declined else 0.0,
        "no_answer_recall": round(ooc_declined / ooc, 4) if ooc else 0.0,
    }


def _balance(row: dict) -> tuple[float, float]:
    return min(row["no_answer_precision"], row["no_answer_recall"]), row["top_1"]


def sweep(runtime: PersonaRuntime, asked: list[Asked]) -> list[dict]:
    """Each threshold's figures, lowest threshold first."""
    return [{"min_score": t, **score(asked, retriever_at(runtime, t))} for t in THRESHOLDS]


def best(rows: list[dict]) -> dict:
    """The row with the best no-answer balance, then the best top-1 (the first on a full tie)."""
    return max(rows, key=_balance)


def ceiling(runtime: PersonaRuntime, asked: list[Asked]) -> dict:
    """What no threshold can beat on these questions (see module doc)."""
    # With min_score 0 nothing is declined for its score, and the statement a turn leads with
    # does not depend on the threshold (a lower one only adds lower-ranked candidates).
    unthresholded = score(asked, retriever_at(runtime, 0.0))
    ranked = [a for a in asked if a.fixed is None and a.found.hits]
    answerable = [a.found.hits[0].score for a in ranked if a.expect]
    unanswerable = [a.found.hits[0].score for a in ranked if not a.expect]
    return {
        "top_1_if_all_answered": unthresholded["top_1"],
        "score_auc": auc(answerable, unanswerable),
    }


def calibrate(questions: dict, registry: PersonaRegistry) -> dict:
    """The sweep on the dev split, applied to the held-out split (see module doc)."""
    print(f"loading {questions['persona']}, planning its questions ...", file=sys.stderr)
    runtime = registry.get(questions["persona"])
    dev = ask(runtime, questions.get("dev") or {})
    held_out = ask(runtime, questions)
    if not any(a.expect for a in dev) or not any(a.expect is None for a in dev):
        raise SystemExit("the question file's dev split needs factual and out_of_corpus questions")
    chosen = best(sweep(runtime, dev))
    configured = runtime.pack.config.retrieval.min_score
    held_rows = sweep(runtime, held_out)
    return {
        "persona": runtime.persona_id,
        "embedder": runtime.embedder.name,
        "questions": {"dev": len(dev), "held_out": len(held_out)},
        "chosen_on_dev": chosen,
        "chosen_on_held_out": score(held_out, retriever_at(runtime, chosen["min_score"])),
        "configured": {
            "min_score": configured,
            "dev": score(dev, retriever_at(runtime, configured)),
            "held_out": score(held_out, retriever_at(runtime, configured)),
        },
        "ceiling": {
            **ceiling(runtime, held_out),
            "best_threshold_on_held_out": best(held_rows),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=Path, default=QUESTIONS, help="question set YAML")
    add_pack_arguments(parser)
    args = parser.parse_args(argv)
    questions = read(parser, "--questions", args.questions, args.packs_dir)
    with open_registry(args) as registry:
        report = calibrate(questions, registry)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
