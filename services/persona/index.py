"""The on-disk retrieval index of one persona: statement vectors + what they are.

Each statement is embedded as several *views* (`corpus.statement_views`: with its heading, bare,
and sentence by sentence); a statement's score for a query is its best view's cosine similarity.
Layout, under `<index_dir>/<persona_id>/`:

- `embeddings.npy`: float32 (n_views, dim), L2-normalised rows;
- `index.json`: corpus hash, embedder name, view settings, the statements (id, source, text,
  section, title) and, per view row, the statement it belongs to.

An index is *stale* when its corpus hash, embedder or view settings differ from the pack's;
`load_or_build` then rebuilds it. Both files are written to temporary names and renamed into
place, so replicas sharing one index folder never read a half-written file; `index.json` is
renamed last and carries the row count, so an `.npy` from another build is detected, not trusted.
Exact search (one matrix-vector product) is plenty: a person's corpus is thousands of statements,
not millions.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from services.core.types import Source
from services.persona.corpus import Statement, statement_views, term_rewriter
from services.persona.embedder import Embedder
from services.persona.pack import PersonaPack

INDEX_FORMAT = 2
VIEWS_VERSION = "2"  # 2: an FAQ question is no view on its own
EMBEDDINGS_FILE = "embeddings.npy"
META_FILE = "index.json"


def view_key(pack: PersonaPack) -> str:
    """Identity of how the pack's statements are turned into embedded texts."""
    terms = sorted(pack.config.retrieval.generic_terms.items())
    return hashlib.sha256(json.dumps([VIEWS_VERSION, terms]).encode()).hexdigest()[:16]


def pack_rewriter(pack: PersonaPack) -> Callable[[str], str]:
    """The text rewrite applied to statements and queries alike before embedding."""
    return term_rewriter(pack.config.retrieval.generic_terms)


@dataclass
class StatementIndex:
    """Statements and their view embeddings, searchable by cosine similarity.

    Attributes:
        statements: Statements, in corpus order.
        embeddings: (n_views, dim) float32, unit rows.
        owners: (n_views,) int, the statement each view row belongs to.
        corpus_hash: Hash of the corpus it was built from.
        embedder_name: `Embedder.name` of the model that built it.
        views: `view_key` of the settings it was built with.
        built: True when `load_or_build` had to (re)build rather than load.
    """

    statements: tuple[Statement, ...]
    embeddings: np.ndarray
    owners: np.ndarray
    corpus_hash: str
    embedder_name: str
    views: str
    built: bool = False

    def __len__(self) -> int:
        return len(self.statements)

    @classmethod
    def build(cls, pack: PersonaPack, embedder: Embedder) -> StatementIndex:
        """Embed every view of every statement of `pack` (in memory; `save` stores it)."""
        rewrite = pack_rewriter(pack)
        texts: list[str] = []
        owners: list[int] = []
        for number, statement in enumerate(pack.statements):
            for view in statement_views(statement):
                texts.append(rewrite(view))
                owners.append(number)
        vectors = embedder.embed(texts)
        return cls(
            pack.statements,
            vectors,
            np.asarray(owners, dtype=np.int32),
            pack.corpus_hash,
            embedder.name,
            view_key(pack),
            built=True,
        )

    def is_current(self, pack: PersonaPack, embedder: Embedder) -> bool:
        """True when built from this corpus, with this embedder and these view settings."""
        return (
            self.corpus_hash == pack.corpus_hash
            and self.embedder_name == embedder.name
            and self.views == view_key(pack)
        )

    def scores(self, query: np.ndarray) -> np.ndarray:
        """Per-statement similarity to a unit query vector: the best of its views."""
        view_scores = self.embeddings @ query.astype(np.float32)
        best = np.full(len(self.statements), -1.0, dtype=np.float32)
        np.maximum.at(best, self.owners, view_scores)
        return best

    def search(self, query: np.ndarray, k: int) -> list[Source]:
        """Top-k statements by similarity to a unit query vector, best first."""
        if not self.statements or k <= 0:
            return []
        scores = self.scores(query)
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
        """Write both files into `folder`, atomically and `index.json` last (see module doc)."""
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(folder / EMBEDDINGS_FILE, lambda f: np.save(f, self.embeddings))
        meta = {
            "format": INDEX_FORMAT,
            "corpus_hash": self.corpus_hash,
            "embedder": self.embedder_name,
            "views": self.views,
            "rows": int(self.embeddings.shape[0]),
            "built_at": time.time(),
            "statements": [asdict(s) for s in self.statements],
            "owners": self.owners.tolist(),
        }
        payload = json.dumps(meta, ensure_ascii=False).encode()
        _atomic_write(folder / META_FILE, lambda f: f.write(payload))

    @classmethod
    def load(cls, folder: Path) -> StatementIndex | None:
        """The index stored in `folder`, or None if absent, unreadable or inconsistent."""
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
            embeddings = np.load(folder / EMBEDDINGS_FILE, allow_pickle=False)
            statements = tuple(Statement(**s) for s in meta["statements"])
            owners = np.asarray(meta["owners"], dtype=np.int32)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if (
            meta.get("format") != INDEX_FORMAT
            or embeddings.ndim != 2
            or embeddings.shape[0] != meta.get("rows")
            or owners.shape != (embeddings.shape[0],)
            or (len(owners) and (owners.min() < 0 or owners.max() >= len(statements)))
        ):
            return None
        return cls(
            statements,
            embeddings.astype(np.float32),
            owners,
            meta["corpus_hash"],
            meta["embedder"],
            meta.get("views", ""),
        )

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
