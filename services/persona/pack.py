"""Persona packs: `persona.yaml` + `corpus/`, validated before anything is served.

Every field is described and bounded and unknown keys are errors, so a typo in a pack fails at
`avatar persona validate` instead of silently changing how a real person's twin behaves. A broken
pack raises `PackError`, whose message names the file and the field (`persona.yaml: consent.scope:
...`), one line, fit for a CLI exit message.

Consent is part of the schema, not a comment: a pack that uses a cloned voice or a likeness must
have consent to that scope, and an expired consent makes the pack unservable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from services.persona.corpus import (
    CORPUS_SUFFIXES,
    CorpusMeta,
    Statement,
    corpus_hash,
    split_front_matter,
    split_statements,
)
from services.types import AvatarLook

PACK_FILE = "persona.yaml"
CORPUS_DIR = "corpus"
MAX_CORPUS_FILES = 500
MAX_CORPUS_FILE_BYTES = 1_000_000
_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}[a-z0-9]$"
_AI_WORD = re.compile(r"\b(AI|A\.I\.|artificial intelligence)\b", re.IGNORECASE)

ConsentScope = Literal[
    "statements",  # the corpus may be used to answer as the person
    "voice",  # a voice cloned from / chosen to resemble the person
    "likeness",  # a face or avatar asset resembling the person
    "public_deployment",  # may be shown to the public, not only internally
    "transcripts",  # conversations with the twin may be logged and reviewed
]


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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VoiceSettings(_Strict):
    """How the persona sounds; passed per request to the TTS stage."""

    piper_voice: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description=(
            "Piper voice (.onnx path, relative to the pack or absolute); null = the TTS "
            "replica's configured default voice."
        ),
    )
    speed: float = Field(default=1.0, ge=0.5, le=2.0, description="Speaking rate; >1 is faster.")


class LookSettings(_Strict):
    """How the persona looks; passed per request to the render stage as an `AvatarLook`."""

    asset_path: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="glTF head asset (relative to the pack or absolute); null = renderer default.",
    )
    skin_rgb: tuple[float, float, float] = Field(
        default=(0.87, 0.70, 0.60), description="Skin colour, linear RGB, each in [0, 1]."
    )
    background_rgb: tuple[float, float, float] = Field(
        default=(0.16, 0.18, 0.22), description="Background colour, linear RGB, each in [0, 1]."
    )

    @field_validator("skin_rgb", "background_rgb")
    @classmethod
    def _unit_range(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(not 0.0 <= channel <= 1.0 for channel in value):
            raise ValueError("each channel must be in [0, 1]")
        return value


class Consent(_Strict):
    """Who agreed to this twin existing, when, and to what."""

    granted_by: str = Field(
        min_length=1, max_length=200, description="The person (or estate) who gave consent."
    )
    granted_at: date = Field(description="Date consent was given (ISO 8601).")
    scope: list[ConsentScope] = Field(
        min_length=1, max_length=5, description="What the consent covers; must include statements."
    )
    expires_at: date | None = Field(
        default=None, description="Date after which the twin must not be served; null = no expiry."
    )
    document: str | None = Field(
        default=None,
        max_length=500,
        description="Reference to the signed consent record (ticket, file, URL).",
    )

    @model_validator(mode="after")
    def _coherent(self) -> Consent:
        if "statements" not in self.scope:
            raise ValueError("scope must include 'statements' (the corpus is the twin's knowledge)")
        if len(set(self.scope)) != len(self.scope):
            raise ValueError("scope lists an entry twice")
        if self.expires_at is not None and self.expires_at <= self.granted_at:
            raise ValueError("expires_at must be after granted_at")
        if self.granted_at > datetime.now(UTC).date():
            raise ValueError("granted_at is in the future")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "granted_by": self.granted_by,
            "granted_at": self.granted_at.isoformat(),
            "scope": list(self.scope),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "document": self.document,
        }


class AvoidTopic(_Strict):
    """A topic the twin declines, detected in code (keywords; examples by embedding)."""

    name: str = Field(min_length=1, max_length=80, description="Short label, used in audit logs.")
    keywords: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Words or phrases (case-insensitive, whole words) that trigger a refusal.",
    )
    examples: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Example questions; a user turn this close in meaning is refused too.",
    )
    reply: str | None = Field(
        default=None,
        min_length=1,
        max_length=400,
        description="Refusal for this topic in the persona's style; null = `replies.refusal`.",
    )

    @model_validator(mode="after")
    def _has_trigger(self) -> AvoidTopic:
        if not self.keywords and not self.examples:
            raise ValueError("give keywords or examples, or the topic can never trigger")
        if any(not k.strip() or len(k) > 80 for k in self.keywords):
            raise ValueError("keywords must be non-empty and at most 80 characters")
        return self


class Replies(_Strict):
    """Canned replies in the persona's voice, spoken without calling the LLM."""

    disclosure: str = Field(
        min_length=10,
        max_length=400,
        description="Answer to 'are you real / a bot?'; must say it is an AI.",
    )
    refusal: str = Field(
        min_length=10, max_length=400, description="Polite refusal for an avoided topic."
    )
    unsafe: str = Field(
        min_length=10, max_length=400, description="Polite refusal for unsafe requests."
    )
    no_answer: str = Field(
        min_length=10,
        max_length=400,
        description="When the corpus has nothing that supports an answer: decline to guess.",
    )
    not_heard: str = Field(
        default="Sorry, I didn't catch that. Could you say it again?",
        min_length=5,
        max_length=200,
        description="Reply to an empty or unintelligible turn.",
    )

    @field_validator("disclosure")
    @classmethod
    def _says_ai(cls, value: str) -> str:
        if not _AI_WORD.search(value):
            raise ValueError("must say plainly that this is an AI (contain the word 'AI')")
        return value


class RetrievalSettings(_Strict):
    """How statements are retrieved for a turn."""

    top_k: int = Field(default=3, ge=1, le=10, description="Statements returned as sources.")
    answer_mode: Literal["generate", "quote"] = Field(
        default="generate",
        description=(
            "generate: the LLM answers from the quoted statements; quote: the twin speaks the "
            "best statement verbatim (the person's own words; for small LLMs that invent facts)."
        ),
    )
    prompt_statements: int = Field(
        default=3, ge=1, le=5, description="Of those, how many go verbatim into the LLM prompt."
    )
    min_score: float = Field(
        default=0.42,
        ge=0.0,
        le=1.0,
        description=(
            "Cosine similarity (MiniLM scale) the best statement must reach for a question to "
            "be answered; below it the twin says it has nothing on that."
        ),
    )
    topic_similarity: float = Field(
        default=0.70,
        ge=0.0,
        le=1.0,
        description="Similarity to an avoid-topic or disclosure example that triggers it.",
    )
    history_messages: int = Field(
        default=4, ge=0, le=20, description="Earlier messages of the conversation in the prompt."
    )
    generic_terms: dict[str, str] = Field(
        default_factory=dict,
        max_length=20,
        description=(
            "Names that run through the whole corpus (the company's) -> a generic phrase, applied "
            "to statements and questions before embedding, so that merely naming the company "
            "does not make an unanswerable question look answerable."
        ),
    )

    @field_validator("generic_terms")
    @classmethod
    def _bounded_terms(cls, value: dict[str, str]) -> dict[str, str]:
        for term, replacement in value.items():
            if not 1 <= len(term.strip()) <= 60 or len(replacement) > 60:
                raise ValueError("terms must be 1-60 characters, replacements at most 60")
        return value


class PersonaConfig(_Strict):
    """`persona.yaml`: everything about a persona except its corpus."""

    id: str = Field(
        pattern=_ID_PATTERN,
        description="Stable id, lowercase letters/digits/dashes; must equal the folder name.",
    )
    display_name: str = Field(min_length=1, max_length=100, description="Name shown to users.")
    short_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=40,
        description="What users call them ('Maya'); null = first word of display_name.",
    )
    role: str = Field(
        min_length=1, max_length=200, description="One line: who they are ('CEO of X')."
    )
    speaking_style: str = Field(
        min_length=1,
        max_length=400,
        description="How they talk, one or two sentences; goes into the system prompt.",
    )
    greeting: str = Field(
        min_length=10,
        max_length=400,
        description="First thing the twin says in a session; must disclose that it is an AI.",
    )
    topics_to_avoid: list[AvoidTopic] = Field(
        default_factory=list, max_length=50, description="Topics the twin declines."
    )
    replies: Replies = Field(description="Canned replies for the non-LLM paths.")
    voice: VoiceSettings = Field(default_factory=VoiceSettings, description="TTS parameters.")
    look: LookSettings = Field(default_factory=LookSettings, description="Render parameters.")
    consent: Consent = Field(description="The consent record this twin is served under.")
    retrieval: RetrievalSettings = Field(
        default_factory=RetrievalSettings, description="Retrieval and prompt settings."
    )

    @field_validator("greeting")
    @classmethod
    def _greeting_discloses(cls, value: str) -> str:
        # The session-start disclosure is a product rule: enforce it where packs are written.
        if not _AI_WORD.search(value):
            raise ValueError("must disclose that this is an AI (contain the word 'AI')")
        return value

    @model_validator(mode="after")
    def _consent_covers_use(self) -> PersonaConfig:
        if self.voice.piper_voice is not None and "voice" not in self.consent.scope:
            raise ValueError("voice.piper_voice is set but consent.scope lacks 'voice'")
        if self.look.asset_path is not None and "likeness" not in self.consent.scope:
            raise ValueError("look.asset_path is set but consent.scope lacks 'likeness'")
        if self.retrieval.prompt_statements > self.retrieval.top_k:
            raise ValueError("retrieval.prompt_statements must not exceed retrieval.top_k")
        return self

    @property
    def name(self) -> str:
        """What users call the persona."""
        return self.short_name or self.display_name.split()[0]


@dataclass(frozen=True)
class CorpusFile:
    """One validated corpus file."""

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
        return self.config.id

    def resolve(self, path: str | None) -> str | None:
        """A pack-relative asset path made absolute (absolute paths and None pass through)."""
        if path is None:
            return None
        candidate = Path(path)
        return str(candidate if candidate.is_absolute() else (self.root / candidate).resolve())

    @property
    def look(self) -> AvatarLook:
        look = self.config.look
        return AvatarLook(
            asset_path=self.resolve(look.asset_path),
            skin_rgb=tuple(look.skin_rgb),
            background_rgb=tuple(look.background_rgb),
        )

    @property
    def voice(self) -> str | None:
        return self.resolve(self.config.voice.piper_voice)


def _loc(error: dict[str, Any]) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(root)"


def _from_validation(file: str, exc: ValidationError) -> PackError:
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
    """Parse and validate `persona.yaml` of the pack at `root`."""
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
    expires = config.consent.expires_at
    if expires is not None and expires < datetime.now(UTC).date():
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

    Stat-only, so a registry can call it on every lookup; a file added, removed or edited
    changes it.
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
