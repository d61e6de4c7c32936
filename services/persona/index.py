"""The on-disk retrieval index of one persona: statement vectors + what they are.

Layout, under `<index_dir>/<persona_id>/`:

- `embeddings.npy`: float32 (n_statements, dim), L2-normalised rows;
- `index.json`: corpus hash, embedder name, and the statements (id, source, text, section,
  title) in row order.

An index is *stale* when its corpus hash or embedder differs from the pack's; `load_or_build`
then rebuilds it. Both files are written to temporary names and renamed into place, so several
replicas sharing one index folder never read a half-written file; `index.json` is renamed last
and carries the row count, so an `.npy` from another build is detected, not trusted. Exact search
(one matrix-vector product) is plenty: a person's corpus is thousands of statements, not
millions.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from services.persona.corpus import Source, Statement
from services.persona.embedder import Embedder
from services.persona.pack import PersonaPack

INDEX_FORMAT = 1
EMBEDDINGS_FILE = "embeddings.npy"
META_FILE = "index.json"


@dataclass
class StatementIndex:
    """Statements and their embeddings, searchable by cosine similarity.

    Attributes:
        statements: Statements in row order.
        embeddings: (n, dim) float32, unit rows.
        corpus_hash: Hash of the corpus it was built from.
        embedder_name: `Embedder.name` of the model that built it.
        built: True when `load_or_build` had to (re)build rather than load.
    """

    statements: tuple[Statement, ...]
    embeddings: np.ndarray
    corpus_hash: str
    embedder_name: str
    built: bool = False

    def __len__(self) -> int:
        return len(self.statements)

    @classmethod
    def build(cls, pack: PersonaPack, embedder: Embedder) -> StatementIndex:
        vectors = embedder.embed([s.embed_text for s in pack.statements])
        return cls(pack.statements, vectors, pack.corpus_hash, embedder.name, built=True)

    def is_current(self, pack: PersonaPack, embedder: Embedder) -> bool:
        return self.corpus_hash == pack.corpus_hash and self.embedder_name == embedder.name

    def search(self, query: np.ndarray, k: int) -> list[Source]:
        """Top-k statements by cosine similarity to a unit query vector, best first."""
        if not self.statements or k <= 0:
            return []
        scores = self.embeddings @ query.astype(np.float32)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [
            Source(
                id=self.statements[i].id,
                source=self.statements[i].source,
                text=self.statements[i].text,
                score=float(scores[i]),
                title=self.statements[i].title,
            )
            for i in top
        ]

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(folder / EMBEDDINGS_FILE, lambda f: np.save(f, self.embeddings))
        meta = {
            "format": INDEX_FORMAT,
            "corpus_hash": self.corpus_hash,
            "embedder": self.embedder_name,
            "rows": len(self.statements),
            "dim": int(self.embeddings.shape[1]) if self.embeddings.ndim == 2 else 0,
            "built_at": time.time(),
            "statements": [asdict(s) for s in self.statements],
        }
        payload = json.dumps(meta, ensure_ascii=False, indent=1).encode()
        _atomic_write(folder / META_FILE, lambda f: f.write(payload))

    @classmethod
    def load(cls, folder: Path) -> StatementIndex | None:
        """The index stored in `folder`, or None if absent, unreadable or inconsistent."""
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
            embeddings = np.load(folder / EMBEDDINGS_FILE, allow_pickle=False)
        except (OSError, ValueError):
            return None
        statements = tuple(Statement(**s) for s in meta.get("statements", []))
        if (
            meta.get("format") != INDEX_FORMAT
            or embeddings.ndim != 2
            or embeddings.shape[0] != len(statements)
            or meta.get("rows") != len(statements)
        ):
            return None
        return cls(statements, embeddings.astype(np.float32), meta["corpus_hash"], meta["embedder"])

    @classmethod
    def load_or_build(
        cls, pack: PersonaPack, embedder: Embedder, index_dir: str | Path | None
    ) -> StatementIndex:
        """Load the stored index if current, else build it (and store it if `index_dir`)."""
        folder = Path(index_dir) / pack.id if index_dir is not None else None
        if folder is not None:
            stored = cls.load(folder)
            if stored is not None and stored.is_current(pack, embedder):
                return stored
        index = cls.build(pack, embedder)
        if folder is not None:
            index.save(folder)
        return index


def _atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
