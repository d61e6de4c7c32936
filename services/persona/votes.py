"""The guard's nearest-neighbour votes, and their sizes and floors per embedder.

A turn's nearest rows among labelled examples (unsafe request types, or an avoided topic's
examples) and rows that must be answered (benign look-alikes, the person's own statements) vote,
each weighted exp(`SHARPNESS` x similarity). A vote holds up better than one nearest-neighbour
margin: embedders put topic before intent ("why is lockout/tagout important?" beside "how do I
get around lockout/tagout?"), and a question about the person's own work has her statements
among its neighbours.

The vote sizes and floors depend on the embedder's cosine scale (`VoteScale`, by
`Embedder.key`). MiniLM's were chosen first, on the demo's dev split and the two tuning probe
sets; mpnet's again on the same data, by a coordinate sweep (README, "Personas"). An embedder
without its own uses MiniLM's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SHARPNESS = 10.0


@dataclass(frozen=True)
class VoteScale:
    """Per-embedder vote settings.

    Attributes:
        unsafe_neighbours: Rows in the unsafe vote.
        unsafe_floor: Similarity the nearest unsafe example must reach for the vote to count.
        topic_floor: The same for an avoided topic's vote (9 rows, see `guard.TOPIC_NEIGHBOURS`).
    """

    unsafe_neighbours: int
    unsafe_floor: float
    topic_floor: float


MINILM = VoteScale(unsafe_neighbours=15, unsafe_floor=0.45, topic_floor=0.6)
SCALES = {
    "minilm": MINILM,
    # Smaller and lower: mpnet's unsafe neighbours are fewer and its similarities lower; on the
    # tuning sets unsafe recall 0.76 -> 0.80 and 0.82 -> 0.86, benign refusals at most 0.7%.
    "mpnet": VoteScale(unsafe_neighbours=9, unsafe_floor=0.40, topic_floor=0.5),
}


def scale_for(embedder_key: str) -> VoteScale:
    return SCALES.get(embedder_key, MINILM)


def neighbour_vote(
    neighbours: np.ndarray, labels: np.ndarray, query: np.ndarray, k: int
) -> tuple[dict[Any, float], float, float]:
    """A weighted vote of the `k` rows of `neighbours` nearest to `query`, whose first
    `len(labels)` rows are labelled examples and the rest what must be answered: the weight
    per label among them, the labelled share of all their weight, and the nearest labelled
    row's similarity."""
    sims = neighbours @ query
    nearest = np.argsort(-sims)[:k]
    weights = np.exp(SHARPNESS * sims[nearest])
    labelled = nearest < len(labels)
    by_label: dict[Any, float] = {}
    for row, weight in zip(nearest[labelled], weights[labelled], strict=True):
        label = labels[row].item()
        by_label[label] = by_label.get(label, 0.0) + float(weight)
    share = float(weights[labelled].sum() / weights.sum())
    top = float(sims[: len(labels)].max()) if len(labels) else 0.0
    return by_label, share, top
