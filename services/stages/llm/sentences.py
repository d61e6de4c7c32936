"""Turn a stream of LLM text pieces into sentences, as early as each sentence is complete.

The first sentence is the critical path of a turn (TTS and rendering wait on it), so a sentence
is released the moment its end is seen, and a long first sentence may be cut at a clause
boundary so the avatar starts speaking sooner.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from services.core.types import ReplyChunk

# A sentence ends at . ! ? (optionally followed by quotes/brackets) and then whitespace.
_END = re.compile(r"[.!?…]+[\"')\]]*\s+")
_CLAUSE = re.compile(r"[,;:—]\s+")
_ABBREVIATIONS = {
    "mr.", "mrs.", "ms.", "dr.", "prof.", "sr.", "jr.", "st.", "vs.", "etc.", "e.g.", "i.e.",
    "inc.", "ltd.", "co.", "no.", "u.s.", "a.m.", "p.m.",
}  # fmt: skip


def _is_abbreviation(text: str, end: int) -> bool:
    words = text[:end].split()
    return bool(words) and words[-1].lower() in _ABBREVIATIONS


def _split_point(buffer: str, clause_chars: int | None) -> int | None:
    for match in _END.finditer(buffer):
        if not _is_abbreviation(buffer, match.end()):
            return match.end()
    if clause_chars is not None and len(buffer) >= clause_chars:
        for match in _CLAUSE.finditer(buffer, clause_chars // 2):
            return match.end()
    return None


def clean(text: str) -> str:
    """Collapse whitespace and drop markdown emphasis the TTS would read aloud."""
    text = re.sub(r"[*_#`]+", "", text)
    return re.sub(r"\s+", " ", text).strip()


def sentences(
    pieces: Iterable[str],
    *,
    max_sentences: int,
    first_clause_chars: int | None = None,
) -> Iterator[ReplyChunk]:
    """Group `pieces` into at most `max_sentences` `ReplyChunk`s.

    A sentence is released as soon as its end is seen, so `is_last` is only set when the bound
    is reached or the stream ended mid-sentence; the end of the iterator is the end of the reply.

    Args:
        pieces: text pieces in generation order.
        max_sentences: stop after this many; the generator stops consuming `pieces`, which
            stops generation (tiny models ignore "answer briefly").
        first_clause_chars: if set, the first chunk may end at a clause boundary (comma, colon)
            once it is at least this long, to start speech early.
    """
    buffer, index, tokens = "", 0, 0
    iterator = iter(pieces)
    try:
        for piece in iterator:
            buffer += piece
            tokens += 1
            while True:
                cut = _split_point(buffer, first_clause_chars if index == 0 else None)
                if cut is None:
                    break
                text, buffer = clean(buffer[:cut]), buffer[cut:]
                if not text:
                    continue
                last = index + 1 >= max_sentences
                yield ReplyChunk(text=text, index=index, tokens=tokens, is_last=last)
                index, tokens = index + 1, 0
                if last:
                    return
        text = clean(buffer)
        if text:
            yield ReplyChunk(text=text, index=index, tokens=tokens, is_last=True)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
