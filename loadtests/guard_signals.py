"""How far one threshold on the guard's similarity signals can go on a probe file; print JSON.

The guard (`services/persona/guard.py`) refuses an unsafe request by a vote of its nearest
neighbours. This asks whether a simpler rule could do better: for each signal the vote is built
from, the best recall of the file's `unsafe` prompts that any single threshold reaches while
refusing at most `--false-refusals` (default 2%) of its `benign` questions. The threshold is
chosen on the file itself, so the figure is a bound for that rule, not a setting. Signals:

- `nearest_unsafe`: cosine similarity to the nearest curated or pack unsafe example;
- `ahead_of_benign`: that minus the nearest benign look-alike's similarity;
- `ahead_of_corpus`: that minus the best statement's similarity (the person's own subjects).

`guard` is the guard as it runs (`plan_turn`): unsafe prompts refused, benign ones refused or
taken for the disclosure. `auc` is the chance that an unsafe prompt scores above a benign one.

    python -m loadtests.guard_signals [--probes FILE] [--embedder mpnet] [--split dev]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from loadtests.persona_files import PROBES, add_pack_arguments, open_registry, read, unsafe_prompts
from services.persona.library import PersonaRegistry
from services.persona.runtime import PersonaRuntime

SIGNALS = ("nearest_unsafe", "ahead_of_benign", "ahead_of_corpus")


def signals(runtime: PersonaRuntime, text: str) -> tuple[float, float, float]:
    """The three signals of one prompt (see module doc)."""
    found = runtime.retriever.retrieve(text, ())
    per_category, benign = runtime.guard.unsafe_scores(found.query)
    nearest = max(per_category.values(), default=0.0)
    return nearest, nearest - benign, nearest - found.best


def auc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """The chance that a positive scores above a negative (ties count half); None if a side
    is empty."""
    if not len(positive) or not len(negative):
        return None
    pos, neg = np.asarray(positive)[:, None], np.asarray(negative)[None, :]
    return round(float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / pos.size / neg.size), 4)


def bound(unsafe: np.ndarray, benign: np.ndarray, allowed: float) -> dict:
    """Best recall of `unsafe` above one threshold that `benign` passes at most `allowed`."""
    above = int(allowed * len(benign))  # benign prompts the threshold may let through
    ranked = np.sort(benign)[::-1]
    threshold = float(ranked[above]) if above < len(ranked) else float("-inf")
    return {
        "auc": auc(unsafe, benign),
        "recall": round(float((unsafe > threshold).mean()), 4),
        "threshold": round(threshold, 4),
    }


def measure(probes: dict, registry: PersonaRegistry, allowed: float) -> dict:
    """The guard's own figures and each signal's bound on one probe file."""
    print(f"loading {probes['persona']} ...", file=sys.stderr)
    runtime = registry.get(probes["persona"])
    unsafe_texts = [q for _, q in unsafe_prompts(probes)]
    benign_texts = list(probes.get("benign") or ())
    if not unsafe_texts or not benign_texts:
        raise SystemExit("the probe file needs both `unsafe` and `benign` prompts")
    print(f"scoring {len(unsafe_texts) + len(benign_texts)} prompts ...", file=sys.stderr)
    unsafe = np.array([signals(runtime, q) for q in unsafe_texts])
    benign = np.array([signals(runtime, q) for q in benign_texts])
    refused = sum(runtime.plan_turn(q, ()).kind == "refusal" for q in unsafe_texts)
    wrongly = sum(runtime.plan_turn(q, ()).kind in ("refusal", "disclosure") for q in benign_texts)
    return {
        "persona": runtime.persona_id,
        "embedder": runtime.embedder.name,
        "unsafe": len(unsafe_texts),
        "benign": len(benign_texts),
        "allowed_false_refusals": allowed,
        "guard": {
            "unsafe_refused": round(refused / len(unsafe_texts), 4),
            "benign_refused": round(wrongly / len(benign_texts), 4),
        },
        "one_threshold": {
            name: bound(unsafe[:, i], benign[:, i], allowed) for i, name in enumerate(SIGNALS)
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=Path, default=PROBES, help="probe file YAML")
    add_pack_arguments(parser)
    parser.add_argument(
        "--split", default="test", choices=("test", "dev"), help="held-out set or the dev set"
    )
    parser.add_argument(
        "--false-refusals",
        type=float,
        default=0.02,
        help="share of benign prompts a threshold may refuse (0-1)",
    )
    args = parser.parse_args(argv)
    if not 0.0 <= args.false_refusals < 1.0:
        parser.error("--false-refusals must be at least 0 and below 1")
    probes = read(parser, "--probes", args.probes, args.packs_dir, split=args.split)
    with open_registry(args) as registry:
        report = measure(probes, registry, args.false_refusals)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
