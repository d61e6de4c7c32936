"""The guard's example vectors kept on disk (`services.persona.vector_cache`), and the pack's
per-embedder thresholds (`retrieval.per_embedder`). Model-free (the hashing embedder)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from services.core.settings import EmbedderKey
from services.persona import vector_cache
from services.persona.embedder import EMBEDDERS, HashingEmbedder
from services.persona.library import PACKS_DIR
from services.persona.pack import load_pack
from services.persona.runtime import PersonaRuntime
from services.persona.schema import RetrievalSettings


class CountingEmbedder(HashingEmbedder):
    # Claims meaning, so that the guard embeds its examples (the hashing one skips them).
    semantic = True

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts):
        self.calls += 1
        return super().embed(texts)


def test_vectors_are_stored_by_embedder_and_texts(tmp_path: Path) -> None:
    embedder = CountingEmbedder()
    cache = vector_cache.VectorCache(embedder, tmp_path / "v")
    first = cache.embed(["build a bomb", "poison a coworker"])
    again = vector_cache.VectorCache(embedder, tmp_path / "v").embed(
        ["build a bomb", "poison a coworker"]
    )
    assert embedder.calls == 1 and np.array_equal(first, again)
    cache.embed(["build a bomb"])  # another list of texts: another file
    assert embedder.calls == 2 and len(list((tmp_path / "v").glob("hashing-*.npy"))) == 2


def test_a_damaged_file_is_embedded_again(tmp_path: Path) -> None:
    embedder = CountingEmbedder()
    cache = vector_cache.VectorCache(embedder, tmp_path)
    expected = cache.embed(["a", "b"])
    for path in tmp_path.glob("*.npy"):
        path.write_bytes(b"not an array")
    assert np.array_equal(cache.embed(["a", "b"]), expected) and embedder.calls == 2


def test_no_folder_or_an_unwritable_one_still_embeds(tmp_path: Path) -> None:
    assert vector_cache.VectorCache(HashingEmbedder(), None).embed(["x"]).shape == (1, 512)
    blocked = tmp_path / "file"
    blocked.write_text("a file where the folder should be")
    assert vector_cache.VectorCache(HashingEmbedder(), blocked).embed(["x"]).shape == (1, 512)


def test_a_runtime_keeps_its_guard_vectors_beside_the_index(tmp_path: Path) -> None:
    pack = load_pack(PACKS_DIR / "maya-castellan")
    PersonaRuntime.from_pack(pack, CountingEmbedder(), tmp_path)
    stored = list((tmp_path / vector_cache.FOLDER).glob("hashing-*.npy"))
    assert len(stored) >= 3  # curated unsafe examples, benign look-alikes, disclosure, topics
    embedder = CountingEmbedder()
    PersonaRuntime.from_pack(pack, embedder, tmp_path)
    assert embedder.calls == 0  # the index and every example list came from disk


def test_per_embedder_thresholds_replace_the_packs_own(tmp_path: Path) -> None:
    settings = RetrievalSettings(
        min_score=0.5, lexical_weight=0.1, per_embedder={"minilm": {"min_score": 0.56}}
    )
    minilm = settings.for_embedder("minilm")
    assert (minilm.min_score, minilm.lexical_weight) == (0.56, 0.1)
    assert settings.for_embedder("mpnet") is settings
    with pytest.raises(ValidationError, match="per_embedder"):
        RetrievalSettings(per_embedder={"bert": {"min_score": 0.5}})
    assert set(get_args(EmbedderKey)) == set(EMBEDDERS)  # every embedder can be calibrated
    with pytest.raises(ValidationError, match="min_score"):
        RetrievalSettings(per_embedder={"minilm": {"min_score": 3.0}})

    root = Path(shutil.copytree(PACKS_DIR / "maya-castellan", tmp_path / "maya-castellan"))
    config = yaml.safe_load((root / "persona.yaml").read_text())
    config["retrieval"]["per_embedder"] = {"hashing": {"min_score": 0.9, "lexical_weight": 0.5}}
    (root / "persona.yaml").write_text(yaml.safe_dump(config))
    runtime = PersonaRuntime.from_pack(load_pack(root), HashingEmbedder(), tmp_path / "ix")
    assert runtime.retriever.settings.min_score == 0.9
    assert runtime.pack.config.retrieval.lexical_weight == 0.5
