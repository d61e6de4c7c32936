"""Persona packs on disk: a folder with `persona.yaml` + `corpus/`, loaded and validated.

`load_pack` is the one way a pack gets into the process: it parses `persona.yaml` against
`schema.PersonaConfig`, refuses an expired consent, reads and splits every corpus file, and
hashes the corpus so a stale index is detected. A broken pack raises `PackError`, whose message
names the file and the field (`persona.yaml: consent.scope: ...`), one line, fit for a CLI exit
message. `write_pack` is the reverse, for tools and tests; `pack_signature` is the cheap change
detector the library polls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from services.core.types import AvatarLook
from services.persona.corpus import (
    CORPUS_SUFFIXES,
    CorpusMeta,
    Statement,
    corpus_hash,
    split_front_matter,
    split_statements,
)
from services.persona.schema import PersonaConfig

PACK_FILE = "persona.yaml"
CORPUS_DIR = "corpus"
MAX_CORPUS_FILES = 500
MAX_CORPUS_FILE_BYTES = 1_000_000


class PackError(ValueError):
    """A persona pack is invalid. `str()` is one line naming the file and the field.

    Attributes:
        file: Path of the offending file (or folder), relative to the pack where possible.
        field: Dotted field path inside that file, or a short tag like `corpus`.
        message: What is wrong.
    """

    def __init__(self, file: str, field: str, message: str) -> None:
        self.file = file
        self.field = field
        self.message = message
        super().__init__(f"{file}: {field}: {message}")


@dataclass(frozen=True)
class CorpusFile:
    """One validated corpus file.

    Attributes:
        name: Path relative to `corpus/`, with forward slashes; the prefix of statement ids.
        meta: Its front matter (defaults when it has none).
        statements: Its statements, in paragraph order.
    """

    name: str
    meta: CorpusMeta
    statements: tuple[Statement, ...]


@dataclass(frozen=True)
class PersonaPack:
    """A loaded, validated pack.

    Attributes:
        root: The pack folder.
        config: Parsed `persona.yaml`.
        files: Corpus files in name order.
        statements: All statements, in file then paragraph order.
        corpus_hash: Content hash of the corpus; an index built from another hash is stale.
    """

    root: Path
    config: PersonaConfig
    files: tuple[CorpusFile, ...]
    statements: tuple[Statement, ...]
    corpus_hash: str

    @property
    def id(self) -> str:
        """The persona id (`persona.yaml: id`, equal to the folder name)."""
        return self.config.id

    def resolve(self, path: str | None) -> str | None:
        """A pack-relative asset path made absolute (absolute paths and None pass through)."""
        if path is None:
            return None
        candidate = Path(path)
        return str(candidate if candidate.is_absolute() else (self.root / candidate).resolve())

    @property
    def look(self) -> AvatarLook:
        """Render parameters, with the asset path resolved against the pack folder."""
        look = self.config.look
        return AvatarLook(
            asset_path=self.resolve(look.asset_path),
            skin_rgb=tuple(look.skin_rgb),
            background_rgb=tuple(look.background_rgb),
        )

    @property
    def voice(self) -> str | None:
        """The Piper voice path resolved against the pack folder; None = the TTS default."""
        return self.resolve(self.config.voice.piper_voice)


def _loc(error: dict[str, Any]) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(root)"


def _from_validation(file: str, exc: ValidationError) -> PackError:
    # Only the first error is spelled out: a PackError is one line, and fixing the first error
    # is how an author works down the list anyway; the count says more are coming.
    errors = exc.errors()
    first = errors[0]
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key (not in the schema)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return PackError(file, _loc(first), message + more)


def _read_yaml(path: Path, display: str) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise PackError(display, "(encoding)", f"not UTF-8 ({exc.reason})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(yaml)"
        raise PackError(display, where, f"invalid YAML: {getattr(exc, 'problem', exc)}") from exc


def load_config(root: Path) -> PersonaConfig:
    """Parse and validate `persona.yaml` of the pack at `root`.

    Separate from `load_pack` so that listing personas reads one small file per pack, never a
    corpus.

    Raises:
        PackError: Missing or invalid file, `id` not equal to the folder name, or an expired
            consent.
    """
    path = root / PACK_FILE
    display = str(path)
    if not path.is_file():
        raise PackError(display, "(file)", "missing: a pack needs persona.yaml")
    data = _read_yaml(path, display)
    if not isinstance(data, dict):
        raise PackError(display, "(root)", "must be a mapping of keys to values")
    try:
        config = PersonaConfig.model_validate(data)
    except ValidationError as exc:
        raise _from_validation(display, exc) from exc
    if config.id != root.name:
        raise PackError(display, "id", f"{config.id!r} must equal the folder name {root.name!r}")
    if config.consent.is_expired():
        expires = config.consent.expires_at
        raise PackError(display, "consent.expires_at", f"consent expired on {expires}; not served")
    return config


def _load_corpus_file(path: Path, name: str, display: str) -> tuple[CorpusFile, bytes]:
    data = path.read_bytes()
    if len(data) > MAX_CORPUS_FILE_BYTES:
        raise PackError(display, "(size)", f"larger than {MAX_CORPUS_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackError(display, "(encoding)", f"not UTF-8 ({exc.reason})") from exc
    front, body = split_front_matter(text)
    meta = CorpusMeta()
    if front is not None:
        try:
            raw = yaml.safe_load(front) or {}
        except yaml.YAMLError as exc:
            raise PackError(display, "(front matter)", f"invalid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise PackError(display, "(front matter)", "must be a mapping of keys to values")
        try:
            meta = CorpusMeta.model_validate(raw)
        except ValidationError as exc:
            raise _from_validation(display, exc) from exc
    statements = split_statements(name, body, title=meta.title)
    if not statements:
        raise PackError(display, "(content)", "no statements: the file is empty")
    return CorpusFile(name, meta, tuple(statements)), data


def load_pack(path: str | Path) -> PersonaPack:
    """Load and validate the pack at `path`. Raises `PackError` naming file and field."""
    root = Path(path).resolve()
    if not root.is_dir():
        raise PackError(str(root), "(folder)", "not a directory")
    config = load_config(root)
    corpus_dir = root / CORPUS_DIR
    if not corpus_dir.is_dir():
        raise PackError(str(corpus_dir), "corpus", "missing: a pack needs a corpus/ folder")
    paths = sorted(p for p in corpus_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    files: list[CorpusFile] = []
    raw: list[tuple[str, bytes]] = []
    for file_path in paths:
        name = file_path.relative_to(corpus_dir).as_posix()
        display = str(file_path)
        if file_path.suffix.lower() not in CORPUS_SUFFIXES:
            # Rejecting beats ignoring: a dropped-in .docx would otherwise vanish silently.
            raise PackError(display, "(file)", f"corpus files must be {'/'.join(CORPUS_SUFFIXES)}")
        corpus_file, data = _load_corpus_file(file_path, name, display)
        files.append(corpus_file)
        raw.append((name, data))
    if not files:
        raise PackError(str(corpus_dir), "corpus", "empty: no .md or .txt statements")
    if len(files) > MAX_CORPUS_FILES:
        raise PackError(str(corpus_dir), "corpus", f"more than {MAX_CORPUS_FILES} files")
    statements = tuple(s for f in files for s in f.statements)
    return PersonaPack(root, config, tuple(files), statements, corpus_hash(raw))


def pack_signature(root: Path) -> tuple[tuple[str, int, int], ...]:
    """Cheap change detector: (name, mtime_ns, size) of persona.yaml and every corpus file.

    Stat-only, so `library.PersonaRegistry` can call it on every lookup; a file added, removed or
    edited changes it.
    """
    entries: list[tuple[str, int, int]] = []
    candidates = [root / PACK_FILE]
    corpus_dir = root / CORPUS_DIR
    if corpus_dir.is_dir():
        candidates.extend(p for p in corpus_dir.rglob("*") if p.is_file())
    for path in candidates:
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        entries.append((str(path.relative_to(root)), stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(entries))


def write_pack(
    folder: str | Path, config: dict[str, Any], corpus: dict[str, str], *, validate: bool = True
) -> Path:
    """Write a pack folder from a `persona.yaml` mapping and {corpus file name: text}.

    For programmatic authoring (admin tools, tests). With `validate`, the written pack is loaded
    back, so a bad config raises `PackError` here rather than when first served.
    """
    root = Path(folder)
    (root / CORPUS_DIR).mkdir(parents=True, exist_ok=True)
    (root / PACK_FILE).write_text(
        yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    for name, text in corpus.items():
        path = root / CORPUS_DIR / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if validate:
        load_pack(root)
    return root
