"""The persona question and probe files the persona tools read, and how a file is checked.

A question file (`persona_questions.yaml`) and a probe file (`persona_probes*.yaml`) share one
shape: `persona` (a pack id), sections of questions (`factual`, `out_of_corpus`, `disclosure`,
`avoid`, `unsafe`, `benign`, all optional) and a `dev` split of the same sections, the tuning
data; the top level is the held-out split.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from services.persona.embedder import DEFAULT_EMBEDDER, EMBEDDERS, create_embedder
from services.persona.library import PACKS_DIR, PersonaRegistry
from services.persona.pack import PACK_FILE

QUESTIONS = Path(__file__).with_name("persona_questions.yaml")
PROBES = Path(__file__).with_name("persona_probes.yaml")


def read(
    parser: argparse.ArgumentParser, flag: str, path: Path, packs_dir: Path, split: str = "test"
) -> dict:
    """The file as written for `split` "test" (its top level is the held-out split; `dev` stays
    under its key), or only its dev split for "dev"; a usage error naming `flag` and what is
    wrong when it cannot be used (no pack in `packs_dir` included)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        parser.error(f"{flag}: cannot read {path}: {exc}")
    if not isinstance(data, dict) or not isinstance(data.get("persona"), str):
        parser.error(f"{flag}: {path} needs a `persona` key naming a pack")
    if not (packs_dir / data["persona"] / PACK_FILE).is_file():
        parser.error(f"{flag}: persona {data['persona']!r} has no pack in {packs_dir}")
    if split == "dev":
        return {"persona": data["persona"], **(data.get("dev") or {})}
    return data


def unsafe_prompts(questions: dict) -> list[tuple[str, str]]:
    """(category, prompt) for every `unsafe` prompt: the section maps categories to prompts, or
    is a plain list (category "unsafe")."""
    section = questions.get("unsafe") or {}
    if not isinstance(section, dict):
        section = {"unsafe": section}
    return [(category, q) for category, items in section.items() for q in items or ()]


def add_pack_arguments(parser: argparse.ArgumentParser) -> None:
    """`--packs-dir`, `--index-dir` and `--embedder`, which every persona tool takes."""
    parser.add_argument("--packs-dir", type=Path, default=PACKS_DIR, help="persona packs folder")
    parser.add_argument("--index-dir", type=Path, help="index folder (default: a temp folder)")
    parser.add_argument(
        "--embedder", default=DEFAULT_EMBEDDER, choices=sorted(EMBEDDERS), help="embedding model"
    )


@contextmanager
def open_registry(args: argparse.Namespace) -> Iterator[PersonaRegistry]:
    """The packs of `args.packs_dir`, indexed with `args.embedder` into `args.index_dir` (a
    temporary folder, removed after, when none is given)."""
    with tempfile.TemporaryDirectory(prefix="persona-tool-") as tmp:
        yield PersonaRegistry(
            args.packs_dir, args.index_dir or tmp, embedder=create_embedder(args.embedder)
        )
