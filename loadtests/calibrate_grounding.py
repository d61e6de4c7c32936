"""Choose `grounding.min_similarity` for an embedder from hand-labelled sentences; print JSON.

`loadtests/grounding_labels.yaml` holds sentences an LLM generated for the demo persona's dev
questions in generate mode (`eval_grounding --split dev --details`), each with the statements
the turn cited and a hand label, `supported`: everything it claims is said, or plainly implied,
by the cited statements. The labels are about the sentence and its sources only, so any
embedder can be calibrated on them without generating again.

For each threshold the checker's own verdict (`grounding.GroundingChecker.support`: numbers,
names, then similarity at or above the threshold) is compared with the labels: precision, recall,
F1 and F0.5 of "supported". `best` is the threshold with the highest F0.5, which weighs precision
twice as much as recall, the higher threshold on a tie: a sentence wrongly kept puts words in the
person's mouth, while one wrongly rejected is only replaced by the person's own words.

    python -m loadtests.calibrate_grounding [--embedder mpnet] [--labels FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from services.core.types import Source
from services.persona import grounding
from services.persona.embedder import DEFAULT_EMBEDDER, EMBEDDERS, Embedder, create_embedder
from services.persona.library import PACKS_DIR
from services.persona.pack import PersonaPack, load_pack

LABELS = Path(__file__).with_name("grounding_labels.yaml")
THRESHOLDS = tuple(round(0.40 + 0.05 * i, 2) for i in range(11))  # 0.40 .. 0.90


def checker_scores(
    pack: PersonaPack, embedder: Embedder, items: list[dict]
) -> list[tuple[bool, float]]:
    """For each labelled sentence: (numbers and names pass, similarity to its best source)."""
    statements = {s.id: s for s in pack.statements}
    unknown = sorted({i for item in items for i in item["sources"]} - statements.keys())
    if unknown:
        raise SystemExit(f"labels cite statements the pack does not have: {unknown}")
    config = pack.config
    settings = config.grounding.model_copy(update={"min_similarity": 0.0})
    out = []
    for item in items:
        sources = [
            Source(id=s.id, source=s.source, text=s.text, score=1.0, title=s.title)
            for s in (statements[i] for i in item["sources"])
        ]
        checker = grounding.GroundingChecker(
            sources, embedder, settings, names=grounding.pack_names(config)
        )
        _, best, reason, _ = checker.support(item["sentence"])
        out.append((reason is None, best))
    return out


def sweep(labels: list[bool], scores: list[tuple[bool, float]]) -> dict:
    """Precision / recall / F1 / F0.5 of "supported" at each threshold, and the best one."""
    rows = []
    for threshold in THRESHOLDS:
        kept = [ok and best >= threshold for ok, best in scores]
        true_pos = sum(k and y for k, y in zip(kept, labels, strict=True))
        precision = true_pos / sum(kept) if any(kept) else 0.0
        recall = true_pos / sum(labels) if any(labels) else 0.0
        f1 = 2 * precision * recall / (precision + recall) if true_pos else 0.0
        f05 = 1.25 * precision * recall / (0.25 * precision + recall) if true_pos else 0.0
        rows.append(
            {
                "min_similarity": threshold,
                "kept": sum(kept),
                "precision": round(precision, 3),
                "recall": round(recall, 3),
                "f1": round(f1, 3),
                "f0_5": round(f05, 3),
            }
        )
    best = max(rows, key=lambda r: (r["f0_5"], r["min_similarity"]))
    return {"best": best, "sweep": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, default=LABELS, help="labelled sentences (YAML)")
    parser.add_argument("--packs-dir", type=Path, default=PACKS_DIR, help="persona packs folder")
    parser.add_argument(
        "--embedder", default=DEFAULT_EMBEDDER, choices=sorted(EMBEDDERS), help="embedding model"
    )
    args = parser.parse_args(argv)
    data = yaml.safe_load(args.labels.read_text(encoding="utf-8"))
    items = data["sentences"]
    embedder = create_embedder(args.embedder)
    pack = load_pack(args.packs_dir / data["persona"])
    labels = [bool(item["supported"]) for item in items]
    report = {
        "persona": data["persona"],
        "embedder": embedder.name,
        "sentences": len(items),
        "labelled_supported": sum(labels),
        **sweep(labels, checker_scores(pack, embedder, items)),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
