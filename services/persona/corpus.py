"""Split a persona's corpus into statements with stable ids.

A statement is one paragraph of a corpus file (a list item counts as its own paragraph), so the
tiny LLM can be handed two or three of them verbatim. Ids are `file.md#N`, N counting the file's
statements from 1; a paragraph longer than `MAX_STATEMENT_CHARS` is cut at sentence boundaries
into `file.md#N.1`, `file.md#N.2`, ... Editing one paragraph changes only the ids after it in
the same file, and citations stay readable by a person who opens the file.

A corpus file may start with a YAML front matter block (`---` ... `---`) describing it
(`CorpusMeta`); markdown headings are not statements but give the statements under them their
`section`, which is embedded with the text because a heading often names the topic the
paragraph never repeats.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Bump when the splitting rules change: the corpus hash includes it, so every index is rebuilt.
SPLITTER_VERSION = "1"
MAX_STATEMENT_CHARS = 600
CORPUS_SUFFIXES = (".md", ".txt")

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*(?:\n|\Z)", re.DOTALL)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'A-Z0-9])")


class CorpusMeta(BaseModel):
    """Optional front matter of one corpus file: what kind of document it is, for citations."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str | None = Field(
        default=None, min_length=1, max_length=200, description="Human-readable document title."
    )
    date: dt.date | None = Field(default=None, description="When the person said or wrote it.")
    kind: Literal["post", "talk", "memo", "faq", "interview", "email", "other"] = Field(
        default="other", description="What sort of document the statements come from."
    )
    url: str | None = Field(
        default=None, max_length=500, description="Where the original is published, if anywhere."
    )


@dataclass(frozen=True)
class Statement:
    """One retrievable statement of the person.

    Attributes:
        id: Stable id, `file.md#N` (or `file.md#N.M` for a long paragraph's pieces).
        source: Corpus file name relative to `corpus/`.
        text: The statement verbatim (whitespace collapsed), as it goes into the prompt.
        section: Heading the statement sits under, or None.
        title: The file's front matter title, or None.
    """

    id: str
    source: str
    text: str
    section: str | None = None
    title: str | None = None

    @property
    def embed_text(self) -> str:
        """What gets embedded: the heading (or title) gives the topic the text may not name."""
        context = self.section or self.title
        return f"{context}: {self.text}" if context else self.text


def split_sentences(text: str) -> list[str]:
    """Sentences of a statement (a simple splitter: statements are short, edited prose)."""
    return [piece.strip() for piece in _SENTENCE_END.split(text) if piece.strip()]


_QA_PREFIX = re.compile(r"^(?:Q|A|Question|Answer)\s*:\s*", re.IGNORECASE)
_FAQ_QUESTION = re.compile(r"^(?:Q|Question)\s*:", re.IGNORECASE)


def statement_views(statement: Statement) -> list[str]:
    """The texts a statement is embedded as; its score for a query is the best of them.

    A question usually matches one sentence of a paragraph far better than the whole paragraph
    (whose vector averages several topics), and the heading supplies a topic the text may not
    name. An FAQ's own question ("Q: Where is Fernwick based?") is not a view on its own: short
    and generic, it sits close to every question about the company; it stays embedded with its
    answer (the whole-statement views), and the answer's sentences are views without "A:".
    """
    views = [statement.embed_text]
    if statement.embed_text != statement.text:
        views.append(statement.text)
    sentences = split_sentences(statement.text)
    if len(sentences) > 1:
        views.extend(
            _QA_PREFIX.sub("", sentence)
            for sentence in sentences
            if not _FAQ_QUESTION.match(sentence)
        )
    return list(dict.fromkeys(views))


def term_rewriter(terms: dict[str, str]) -> Callable[[str], str]:
    """Whole-word, case-insensitive replacement of `terms` (longest first).

    Used to replace names that run through the whole corpus (the company's name) with a generic
    phrase before embedding: otherwise "How many patents does Acme hold?" is close to every
    statement that mentions Acme, and the no-answer threshold cannot tell it from a real match.
    """
    if not terms:
        return lambda text: text
    ordered = sorted(terms, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(t) for t in ordered) + r")\b", re.IGNORECASE)
    lookup = {t.lower(): v for t, v in terms.items()}
    return lambda text: pattern.sub(lambda m: lookup[m.group(1).lower()], text)


def split_front_matter(text: str) -> tuple[str | None, str]:
    """Return (front matter YAML or None, body)."""
    match = _FRONT_MATTER.match(text)
    if not match:
        return None, text
    return match.group(1), text[match.end() :]


def _split_long(text: str) -> list[str]:
    """Cut an over-long paragraph into sentence groups of at most MAX_STATEMENT_CHARS / 2."""
    target = MAX_STATEMENT_CHARS // 2
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(text):
        if current and len(current) + 1 + len(sentence) > target:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}".strip()
    if current:
        pieces.append(current)
    return pieces


def _blocks(body: str) -> list[tuple[str, str | None]]:
    """Yield (paragraph text, heading) pairs in order; headings themselves are not paragraphs."""
    out: list[tuple[str, str | None]] = []
    section: str | None = None
    for raw_block in re.split(r"\n\s*\n", body):
        lines = [line for line in raw_block.strip().splitlines() if line.strip()]
        paragraph: list[str] = []
        for line in lines:
            heading = _HEADING.match(line)
            if heading:
                if paragraph:
                    out.append((" ".join(paragraph), section))
                    paragraph = []
                section = heading.group(1).strip() or None
            elif _LIST_ITEM.match(line):
                # A list item is its own statement: FAQ answers and "three rules" lists are
                # written as lists, and each item answers a different question.
                if paragraph:
                    out.append((" ".join(paragraph), section))
                paragraph = [_LIST_ITEM.sub("", line, count=1).strip()]
            else:
                paragraph.append(line.strip())
        if paragraph:
            out.append((" ".join(paragraph), section))
    return out


def split_statements(source: str, body: str, *, title: str | None = None) -> list[Statement]:
    """Split one corpus file's body (front matter already removed) into statements."""
    statements: list[Statement] = []
    number = 0
    for text, section in _blocks(body):
        text = re.sub(r"\s+", " ", text).strip()
        if not text:
            continue
        number += 1
        if len(text) <= MAX_STATEMENT_CHARS:
            statements.append(Statement(f"{source}#{number}", source, text, section, title))
            continue
        for part, piece in enumerate(_split_long(text), start=1):
            statements.append(Statement(f"{source}#{number}.{part}", source, piece, section, title))
    return statements


def corpus_hash(files: list[tuple[str, bytes]]) -> str:
    """Content hash of a corpus (relative name, raw bytes per file), for index staleness."""
    digest = hashlib.sha256(f"splitter={SPLITTER_VERSION}\n".encode())
    for name, data in sorted(files):
        digest.update(name.encode())
        digest.update(b"\0")
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()
