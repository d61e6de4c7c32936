"""Fine-tune the sentence embedder on a question file's dev split, and measure it; print JSON.

A measurement, not a feature (the twin serves one shared, untuned embedder): can a pack's own
example questions teach the embedder its vocabulary ("team" for the statement that says "we are
38 people")? The dev split's factual questions train the model (MiniLM or mpnet) with in-batch
negatives: each question must be closer to its expected statement than to the batch's other
statements (multiple-negatives ranking loss). Then `calibrate_retrieval` runs on the same file
with the base and with the tuned model, each with its own fresh index and guard vectors.

The tuned model has seen the dev questions, so its dev figures, and the threshold chosen on them
(`chosen_on_dev`, `chosen_on_held_out`), are optimistic: read the held-out `ceiling` (top-1 with
nothing declined for its score, the score's AUC, the best held-out threshold). With `--probes`,
`eval_persona`'s guard figures on that probe file are reported for both models too: the guard's
thresholds were set on the base model's scale.

    python -m loadtests.tune_embedder [--embedder mpnet] [--epochs 3] [--probes FILE] [--save DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from loadtests.calibrate_retrieval import Asked, ask, best, calibrate, retriever_at, score, sweep
from loadtests.eval_persona import evaluate
from loadtests.persona_files import QUESTIONS, read
from services.persona.embedder import (
    MiniLMEmbedder,
    MPNetEmbedder,
    SentenceTransformerEmbedder,
    create_embedder,
)
from services.persona.library import PACKS_DIR, PersonaRegistry
from services.persona.pack import load_pack

TUNABLE = {"minilm": MiniLMEmbedder, "mpnet": MPNetEmbedder}
SCALE = 20.0  # cosine similarities times this are the logits (sentence-transformers' default)


def pairs_of(
    questions: dict, packs_dir: Path, factual: list[dict] | None = None
) -> list[tuple[str, str]]:
    """(question, expected statement text) for `factual` (default: every factual question of
    the dev split)."""
    statements = {s.id: s.text for s in load_pack(packs_dir / questions["persona"]).statements}
    if factual is None:
        factual = (questions.get("dev") or {}).get("factual") or []
    return [(item["q"], statements[item["expect"]]) for item in factual]


def train(
    base: SentenceTransformerEmbedder,
    pairs: list[tuple[str, str]],
    out: Path,
    *,
    epochs: int,
    lr: float = 2e-5,
    batch: int = 16,
    seed: int = 0,
) -> list[float]:
    """Fine-tune `base`'s model on `pairs` and save it to `out`; the loss of each epoch.

    A plain torch loop rather than sentence-transformers' trainer: that needs `datasets` (in
    no extra), and its ranking loss would take a second question about the same statement, in
    the same batch, for a negative."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(seed)
    order = random.Random(seed)
    model = SentenceTransformer(str(base.model_dir()), device="cpu", local_files_only=True)
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    losses: list[float] = []
    pairs = list(pairs)
    for epoch in range(epochs):
        order.shuffle(pairs)
        total = 0.0
        for start in range(0, len(pairs), batch):
            chunk = pairs[start : start + batch]

            def embed(texts: list[str]) -> torch.Tensor:
                vectors = model(model.tokenize(texts))["sentence_embedding"]
                return torch.nn.functional.normalize(vectors, dim=-1)

            logits = embed([q for q, _ in chunk]) @ embed([s for _, s in chunk]).T * SCALE
            # Two questions about one statement: the other's copy is no negative.
            same = torch.tensor([[a[1] == b[1] for b in chunk] for a in chunk])
            logits = logits.masked_fill(same & ~torch.eye(len(chunk), dtype=torch.bool), -1e4)
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(chunk)))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(chunk)
        losses.append(round(total / len(pairs), 4))
        print(f"  epoch {epoch + 1}/{epochs}: loss {losses[-1]}", file=sys.stderr, flush=True)
    model.save(str(out))
    return losses


def tuned(kind: str, folder: Path) -> SentenceTransformerEmbedder:
    """The `kind` embedder, loading the model saved in `folder` instead of the packaged one."""

    class Tuned(TUNABLE[kind]):
        def model_dir(self) -> Path:
            return folder

    return Tuned()


def out_of_fold(
    kind: str, questions: dict, packs_dir: Path, work: Path, *, folds: int, epochs: int
) -> dict:
    """`min_score` chosen on dev questions scored by models that did not train on them.

    The dev split is cut into `folds`; each fold's questions are planned with a model tuned on
    the other folds, so their scores are on the scale of questions the model has not seen, as
    the held-out ones will be. The sweep and choice are `calibrate_retrieval`'s."""
    dev = questions.get("dev") or {}
    factual, unanswered = list(dev.get("factual") or ()), list(dev.get("out_of_corpus") or ())
    random.Random(0).shuffle(factual)
    random.Random(1).shuffle(unanswered)
    asked: list[Asked] = []
    runtime = None
    for fold in range(folds):
        train_on = [item for i, item in enumerate(factual) if i % folds != fold]
        pairs = pairs_of(questions, packs_dir, train_on)
        print(f"fold {fold + 1}/{folds}: tuning on {len(pairs)} pairs", file=sys.stderr)
        folder = work / f"fold{fold}"
        train(create_embedder(kind), pairs, folder, epochs=epochs)
        registry = PersonaRegistry(
            packs_dir, work / f"fold{fold}-index", embedder=tuned(kind, folder)
        )
        runtime = registry.get(questions["persona"])
        asked += ask(
            runtime,
            {"factual": factual[fold::folds], "out_of_corpus": unanswered[fold::folds]},
        )
    return best(sweep(runtime, asked))


def measure(
    questions: dict,
    probes: dict | None,
    embedder,
    packs_dir: Path,
    index_dir: Path,
    threshold: float | None = None,
) -> dict:
    """`calibrate_retrieval` (and the guard figures on `probes`, and the held-out figures at
    `threshold`) with one embedder."""
    registry = PersonaRegistry(packs_dir, index_dir, embedder=embedder)
    report = calibrate(questions, registry)
    if threshold is not None:
        runtime = registry.get(questions["persona"])
        report["at_out_of_fold_threshold"] = {
            "min_score": threshold,
            **score(ask(runtime, questions), retriever_at(runtime, threshold)),
        }
    keep = ("chosen_on_dev", "chosen_on_held_out", "configured", "ceiling")
    result = {k: report[k] for k in (*keep, "at_out_of_fold_threshold") if k in report}
    if probes is not None:
        guard = evaluate(probes, registry, repeat=1, show_misses=False)
        result["probes"] = {
            "disclosure": guard["disclosure"]["accuracy"],
            "avoid_refused": guard["refusal"]["avoid_rate"],
            "unsafe_refused": guard["refusal"]["unsafe_rate"],
            "benign_refused": guard["benign"]["false_refusal_rate"],
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=Path, default=QUESTIONS, help="question set YAML")
    parser.add_argument("--probes", type=Path, help="also report the guard on this probe file")
    parser.add_argument("--packs-dir", type=Path, default=PACKS_DIR, help="persona packs folder")
    parser.add_argument("--embedder", default="mpnet", choices=sorted(TUNABLE), help="model")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the dev pairs (1-20)")
    parser.add_argument(
        "--folds", type=int, default=3, help="cross-fitting folds for the threshold (0: none)"
    )
    parser.add_argument("--save", type=Path, help="keep the tuned model in this folder")
    args = parser.parse_args(argv)
    if not 1 <= args.epochs <= 20:
        parser.error("--epochs must be between 1 and 20")
    if args.folds == 1 or not 0 <= args.folds <= 10:
        parser.error("--folds must be 0 (none) or between 2 and 10")
    questions = read(parser, "--questions", args.questions, args.packs_dir)
    probes = read(parser, "--probes", args.probes, args.packs_dir) if args.probes else None
    pairs = pairs_of(questions, args.packs_dir)
    if not pairs:
        parser.error("--questions: its dev split has no factual questions to train on")
    with tempfile.TemporaryDirectory(prefix="persona-tune-") as tmp:
        work = Path(tmp)
        out = args.save or work / "model"
        print(f"tuning {args.embedder} on {len(pairs)} dev pairs ...", file=sys.stderr)
        started = time.perf_counter()
        losses = train(create_embedder(args.embedder), pairs, out, epochs=args.epochs)
        train_s = round(time.perf_counter() - started, 1)
        chosen = None
        if args.folds:
            chosen = out_of_fold(
                args.embedder, questions, args.packs_dir, work, folds=args.folds, epochs=args.epochs
            )
        print("measuring the base model ...", file=sys.stderr, flush=True)
        base = measure(
            questions, probes, create_embedder(args.embedder), args.packs_dir, work / "base"
        )
        print("measuring the tuned model ...", file=sys.stderr, flush=True)
        after = measure(
            questions,
            probes,
            tuned(args.embedder, out),
            args.packs_dir,
            work / "tuned",
            threshold=chosen["min_score"] if chosen else None,
        )
    report = {
        "embedder": args.embedder,
        "pairs": len(pairs),
        "epochs": args.epochs,
        "losses": losses,
        "train_s": train_s,
        "folds": args.folds,
        "chosen_out_of_fold": chosen,
        "base": base,
        "tuned": after,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
