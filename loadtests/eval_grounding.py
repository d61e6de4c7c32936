"""Evaluate grounded generation: how many generated sentences the cited statements support.

Runs the demo persona in `generate` mode with a real LLM (default: the local llama.cpp
SmolLM2-135M) over the factual questions of loadtests/persona_questions.yaml. Each answer is
generated and split into sentences exactly as a turn does (`llm_sentences` with the default
`TurnSettings`), and every sentence goes through the turn's sentence filter
(`personas.as_turn_plan`: the persona's post-filter, then `grounding.GroundingChecker`).

Reported (JSON on stdout):

- `before`: the LLM's sentences; `supported_share` = sentences the checker keeps as generated.
- `after`: what is spoken; `supported_share` re-checks the spoken sentences with a fresh
  checker; `generated_share` / `replaced_share` = spoken sentences that are the LLM's / the
  person's own words; `dropped_share` of the LLM's sentences said nothing; `empty_replies` =
  answers left with nothing to say.
- `machine`, `llm`, and the settings used. `--details` adds every sentence with its similarity,
  the reason it failed and what was spoken instead (how `min_similarity` was chosen on `--split
  dev`: see services/persona/packs/README.md).

Run: `python -m loadtests.eval_grounding --split all --limit 20` (about a second per question on
2 CPU cores). Loads real models (the embedder, default mpnet, and the GGUF): not for the fast unit
tests.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from loadtests import machine
from services.core.config import TurnSettings
from services.core.registry import create_backend
from services.persona import grounding
from services.persona.embedder import DEFAULT_EMBEDDER, EMBEDDERS, create_embedder
from services.persona.library import PACKS_DIR, PersonaRegistry
from services.persona.personas import as_turn_plan
from services.turn.orchestrator import llm_sentences

QUESTIONS = Path(__file__).with_name("persona_questions.yaml")


def questions_for(path: Path, split: str) -> tuple[str, list[str]]:
    """(persona id, factual questions) of the held-out set ("test"), "dev", or "all"."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    test = [item["q"] for item in data["factual"]]
    dev = [item["q"] for item in data["dev"]["factual"]]
    return data["persona"], {"test": test, "dev": dev, "all": dev + test}[split]


def generate_pack(packs: Path, persona: str, folder: Path, overrides: dict) -> Path:
    """A copy of the pack in `folder`, answering in generate mode with `overrides` applied."""
    root = Path(shutil.copytree(packs / persona, folder / persona))
    config = yaml.safe_load((root / "persona.yaml").read_text(encoding="utf-8"))
    config["retrieval"]["answer_mode"] = "generate"
    config["grounding"] = {**config.get("grounding", {}), **overrides}
    if "min_similarity" in overrides:  # the override holds whatever the embedder
        config["grounding"].pop("per_embedder", None)
    (root / "persona.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return root


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def evaluate(runtime, llm, questions: list[str], turn: TurnSettings, details: bool) -> dict:
    """Generate, check and re-check every answer; the metrics of the module docstring."""
    totals = dict.fromkeys((*grounding.OUTCOMES, "checked"), 0)
    spoken_total = spoken_supported = answers = empty = 0
    rows: list[dict] = []
    skipped: dict[str, int] = {}
    llm_s = 0.0
    config = runtime.pack.config
    for question in questions:
        plan = runtime.plan_turn(question, ())
        if plan.kind != "answer" or not plan.needs_llm or not plan.sources:
            key = plan.reason or plan.kind
            skipped[key] = skipped.get(key, 0) + 1
            continue
        answers += 1
        turn_plan = as_turn_plan(plan, runtime)
        started = time.perf_counter()
        # Generate first, then check: in a deployment the check runs in the router while the
        # LLM replica generates; here llama.cpp's spinning threads would starve the embedder.
        generated = [c.text for c in llm_sentences(llm, plan.messages, turn)]
        llm_s += time.perf_counter() - started
        pairs = [(text, turn_plan.sentence_filter(text)) for text in generated]
        counts = turn_plan.metadata["grounding"]
        for key in totals:
            totals[key] += counts[key]
        spoken = [out for _, out in pairs if out]
        empty += not spoken
        recheck, _ = grounding.sentence_filter(
            plan.sources,
            runtime.embedder,
            config.grounding.model_copy(update={"unsupported": "drop"}),
            runtime.filter_sentence,
            names=grounding.pack_names(config),
        )
        spoken_total += len(spoken)
        spoken_supported += sum(bool(recheck(s)) for s in spoken)
        if details:
            rows.append(
                {
                    "q": question,
                    "sources": [s.id for s in plan.sources],
                    "sentences": [
                        {"generated": raw, "spoken": out, **decision}
                        for (raw, out), decision in zip(pairs, counts["sentences"], strict=False)
                    ],
                }
            )
    checked = totals["checked"]
    report = {
        "questions": len(questions),
        "answers_generated": answers,
        "not_generated": skipped,
        "before": {
            "sentences": checked,
            "supported": totals["kept"],
            "supported_share": _share(totals["kept"], checked),
            "filtered_by_persona": totals["filtered"],
        },
        "after": {
            "spoken": spoken_total,
            "supported_share": _share(spoken_supported, spoken_total),
            "generated_share": _share(totals["kept"], spoken_total),
            "replaced_share": _share(totals["replaced"], spoken_total),
            "dropped_share": _share(totals["dropped"], checked),
            "empty_replies": empty,
        },
        "counts": totals,
        "llm_seconds_per_answer": round(llm_s / answers, 3) if answers else 0.0,
    }
    if details:
        report["details"] = rows
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=Path, default=QUESTIONS, help="question set YAML")
    parser.add_argument("--packs-dir", type=Path, default=PACKS_DIR, help="persona packs folder")
    parser.add_argument("--split", default="test", choices=("test", "dev", "all"))
    parser.add_argument("--limit", type=int, default=0, help="at most N questions (0 = all)")
    parser.add_argument("--llm", default="llama_cpp", help="LLM backend name")
    parser.add_argument("--llm-options", default="{}", help="LLM backend options (JSON)")
    parser.add_argument(
        "--embedder", default=DEFAULT_EMBEDDER, choices=sorted(EMBEDDERS), help="embedding model"
    )
    parser.add_argument("--min-similarity", type=float, help="override grounding.min_similarity")
    parser.add_argument("--mode", choices=("replace", "drop"), help="grounding.unsupported")
    parser.add_argument("--details", action="store_true", help="add every sentence and decision")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)

    persona, questions = questions_for(args.questions, args.split)
    if args.limit > 0:
        questions = questions[: args.limit]
    overrides: dict = {}
    if args.min_similarity is not None:
        overrides["min_similarity"] = args.min_similarity
    if args.mode:
        overrides["unsupported"] = args.mode
    llm = create_backend("llm", args.llm, json.loads(args.llm_options))
    llm.load()
    turn = TurnSettings()
    with tempfile.TemporaryDirectory(prefix="grounding-eval-") as tmp:
        packs = Path(tmp) / "packs"
        generate_pack(args.packs_dir, persona, packs, overrides)
        registry = PersonaRegistry(
            packs, Path(tmp) / "index", embedder=create_embedder(args.embedder)
        )
        runtime = registry.get(persona)
        settings = runtime.pack.config.grounding
        report = {
            "persona": persona,
            "split": args.split,
            "llm": {"backend": args.llm, "options": json.loads(args.llm_options)},
            "embedder": runtime.embedder.name,
            "grounding": settings.model_dump(),
            "turn": {"max_tokens": turn.max_tokens, "max_sentences": turn.max_sentences},
            **evaluate(runtime, llm, questions, turn, args.details),
            "machine": machine.describe(),
        }
    llm.close()
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
