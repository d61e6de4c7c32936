"""Embeddings of fixed texts (the guard's examples) kept on disk, by embedder and text.

The guard embeds about 800 curated examples when a persona loads: ~6 s with MiniLM but ~30 s
with mpnet on 2 cores, on every replica start. The texts only change with the project or the
pack, so their vectors are stored next to the statement indexes, one `.npy` per list of texts,
named by the embedder and a hash of the texts. User turns never go through here: nothing a user
says is written to disk by this module.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from services.persona.embedder import Embedder

log = logging.getLogger(__name__)

FOLDER = ".guard-vectors"  # pack ids cannot start with a dot: no clash with an index folder


class VectorCache:
    """`embed(texts)` through a folder of stored results (or straight through without one).

    Args:
        embedder: The embedder whose vectors are stored.
        folder: Where to store them; None = no storage.
    """

    def __init__(self, embedder: Embedder, folder: Path | None) -> None:
        self.embedder = embedder
        self.folder = folder

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if self.folder is None or not texts:
            return self.embedder.embed(texts)
        digest = hashlib.sha256("\0".join([self.embedder.name, *texts]).encode()).hexdigest()
        path = self.folder / f"{self.embedder.key}-{digest[:24]}.npy"
        try:
            stored = np.load(path, allow_pickle=False)
            if stored.shape == (len(texts), self.embedder.dim) and stored.dtype == np.float32:
                return stored
        except (OSError, ValueError):
            pass  # absent or unreadable: embed again and rewrite it
        vectors = self.embedder.embed(texts)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            with os.fdopen(fd, "wb") as out:
                np.save(out, vectors, allow_pickle=False)
            os.replace(tmp, path)
        except OSError as exc:  # a read-only cache only costs the next start the same time
            log.warning("could not store guard vectors in %s: %s", self.folder, exc)
        return vectors
