"""Word-level evidence for retrieval: which of the question's words a statement actually contains.

The sentence embedder matches meaning, but it also rates "Who is Fernwick's head of marketing?"
close to any statement about Fernwick. Words settle what vectors blur:

- `LexicalIndex.coverage(question)`: per statement, the share of the question's content words
  (Snowball-stemmed, IDF-weighted over the pack's own statements) that the statement contains.
  A word the corpus never uses weighs most, so a question about something the person never
  talked about cannot reach full coverage anywhere.
- `LexicalIndex.entities(question)`: the names and numbers the question is about (capitalised
  words inside a sentence, acronyms, known proper nouns of the corpus, digits), less the
  persona's own names; `LexicalIndex.missing(entities, row)` lists those a statement never
  names, even as a close variant ("Canada" / "Canadian", "eighteen" / "18").

Everything is computed from the pack's statements when the retriever starts (milliseconds for a
person's corpus); nothing here is tuned to one persona.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
import snowballstemmer

from services.persona.corpus import Statement

_WORD = re.compile(r"[A-Za-z][A-Za-z'’\-]*[A-Za-z]|[A-Za-z]|\d+(?:[.,]\d+)*")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|[\"(]\s*)$")

# Function words and the chatter around a question ("tell me about", "do you think"): they say
# how something is asked, not what about.
_STOP_TEXT = """
    a about above after again against all also am an and any are around as at be because been
    before being below between both but by can could did do does doing done down during each
    either else ever every few for from further get gets got had has have having he her here
    hers herself him himself his how i i'd i'll i'm i've if in into is isn't it it's its itself
    just know let like lot many me might more most much must my myself no nor not now of off
    often on once one only or other our ours ourselves out over own per please really right same
    say says she should something
    so some still such tell than that that's the their theirs them themselves then there these
    they thing things think this those through to too under until up us very want was wasn't we
    we're we've were what what's when where which while who who's whom whose why will with would
    yes yet you you're you've your yours yourself yourselves
"""
STOP_WORDS = frozenset(_STOP_TEXT.split())

_UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
_TEENS = "fifteen sixteen seventeen eighteen nineteen twenty"
_TENS = "thirty forty fifty sixty seventy eighty ninety"
NUMBER_WORDS = {word: str(value) for value, word in enumerate(f"{_UNITS} {_TEENS}".split())}
NUMBER_WORDS.update(
    {word: str(value) for word, value in zip(_TENS.split(), range(30, 100, 10), strict=True)}
)

HEADING_WEIGHT = 0.5

# What kind of answer a question asks for, and how a statement that gives one looks.
_MONTHS = "january february march april may june july august september october november december"
_NUMBER = r"(?:\d+(?:[.,]\d+)?|" + "|".join(sorted(NUMBER_WORDS, key=len, reverse=True)) + r")"
ANSWER_TYPES = {
    "time": (
        re.compile(r"^\s*(?:when\b|what year\b|since when\b|which year\b)", re.IGNORECASE),
        re.compile(r"\b(?:1[89]\d\d|20\d\d|" + "|".join(_MONTHS.split()) + r")\b", re.IGNORECASE),
    ),
    "duration": (
        re.compile(r"^\s*how long\b", re.IGNORECASE),
        re.compile(
            rf"\b{_NUMBER}\s+(?:more\s+)?(?:years?|months?|weeks?|days?|hours?|minutes?)\b",
            re.IGNORECASE,
        ),
    ),
    "count": (
        re.compile(r"^\s*how (?:many|much)\b", re.IGNORECASE),
        re.compile(rf"\b{_NUMBER}\b", re.IGNORECASE),
    ),
}

_stemmer = snowballstemmer.stemmer("english")


@lru_cache(maxsize=8192)
def stem(word: str) -> str:
    """Snowball (Porter2) stem of a lowercase word."""
    return _stemmer.stemWord(word)


def words(text: str) -> list[str]:
    """The words of `text` as written (case kept), possessive "'s" dropped, hyphens split."""
    out: list[str] = []
    for match in _WORD.finditer(text):
        token = re.sub(r"['’]s$", "", match.group(0))
        out.extend(part for part in re.split(r"-", token) if part)
    return out


def normal(word: str) -> str:
    """Lowercase form used for matching: number words become digits, "2,100" becomes "2100"."""
    lowered = word.lower().replace("’", "'")
    return NUMBER_WORDS.get(lowered, lowered.replace(",", ""))


def terms(text: str) -> list[str]:
    """Content-word stems of `text` (stop words removed), in order, with repeats."""
    out = []
    for word in words(text):
        lowered = normal(word)
        if lowered not in STOP_WORDS and lowered.strip("'"):
            out.append(stem(lowered.strip("'")))
    return out


def close_variant(a: str, b: str) -> bool:
    """Same name in another form: equal, same stem, or one is the other plus an ending
    ("canada"/"canadian", "japan"/"japanese", "crdt"/"crdts"); never two different names
    that merely share a prefix ("austin"/"austria")."""
    if a == b or stem(a) == stem(b):
        return True
    if a.isdigit() or b.isdigit() or min(len(a), len(b)) < 4:
        return False
    shared = len(_common_prefix(a, b))
    return shared >= min(len(a), len(b)) - 1


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]


class LexicalIndex:
    """Content words and names of each statement of one pack.

    Args:
        statements: The pack's statements, in index order.
        own_names: The persona's own names and the names that run through the whole corpus
            (the company's): never required of a statement, since every statement is theirs.
    """

    def __init__(self, statements: Sequence[Statement], own_names: Iterable[str] = ()) -> None:
        self.size = len(statements)
        self.own = {normal(w) for name in own_names for w in words(name)}
        self._terms: list[frozenset[str]] = []
        self._heading_terms: list[frozenset[str]] = []
        self._names: list[frozenset[str]] = []
        df: dict[str, int] = {}
        capitalised: dict[str, int] = {}
        lowercase: set[str] = set()
        for statement in statements:
            body = f"{statement.section or ''} {statement.text}"
            stems = frozenset(terms(statement.text))
            self._terms.append(stems)
            self._heading_terms.append(frozenset(terms(statement.section or "")) - stems)
            for t in stems | self._heading_terms[-1]:
                df[t] = df.get(t, 0) + 1
            surface = words(f"{body} {statement.title or ''}")
            self._names.append(frozenset(normal(w) for w in surface))
            for sentence in re.split(r"(?<=[.!?:])\s+", statement.text):
                for position, word in enumerate(words(sentence)):
                    if word[0].isupper() and position > 0:
                        capitalised[word.lower()] = capitalised.get(word.lower(), 0) + 1
                    elif word[0].islower():
                        lowercase.add(word)
        self._df = df
        self._types = {
            name: np.array([bool(gives.search(s.text)) for s in statements], dtype=np.float32)
            for name, (_, gives) in ANSWER_TYPES.items()
        }
        # Words the corpus only ever writes capitalised mid-sentence are names ("Idris"), even
        # when a question starts with one.
        self.proper_nouns = frozenset(w for w in capitalised if w not in lowercase)
        self._unseen_idf = self._idf(0)

    def _idf(self, df: int) -> float:
        return math.log(1.0 + (self.size - df + 0.5) / (df + 0.5))

    def idf(self, term: str) -> float:
        """Inverse document frequency of a stem; a word the corpus never uses weighs most."""
        return self._idf(self._df.get(term, 0))

    def known(self, term: str) -> bool:
        return term in self._df

    def query_terms(self, text: str) -> list[str]:
        """Unique content stems of a question, minus the persona's own names."""
        own = {stem(w) for w in self.own}
        return [t for t in dict.fromkeys(terms(text)) if t not in own]

    def coverage(self, text: str) -> np.ndarray:
        """Per statement: IDF-weighted share of the question's content words it contains."""
        query = self.query_terms(text)
        out = np.zeros(self.size, dtype=np.float32)
        if not query:
            return out
        weights = {t: self.idf(t) for t in query}
        total = sum(weights.values())
        for row, (stems, heading) in enumerate(zip(self._terms, self._heading_terms, strict=True)):
            # A word only in the heading counts half: the heading is the topic of several
            # statements, the text says which one answers.
            found = sum(w for t, w in weights.items() if t in stems)
            found += HEADING_WEIGHT * sum(w for t, w in weights.items() if t in heading)
            out[row] = found / total
        return out

    def answer_type(self, text: str) -> np.ndarray:
        """Per statement: 1.0 when the question asks when / how long / how many and the
        statement gives a date / duration / number, else 0.0."""
        for name, (asks, _) in ANSWER_TYPES.items():
            if asks.search(text):
                return self._types[name]
        return np.zeros(self.size, dtype=np.float32)

    def uncovered(self, text: str, row: int) -> list[str]:
        """The question's content stems that statement `row` does not contain."""
        return [t for t in self.query_terms(text) if t not in self._terms[row]]

    def unseen_share(self, text: str) -> float:
        """IDF-weighted share of the question's content words that no statement uses."""
        query = self.query_terms(text)
        if not query:
            return 0.0
        weights = {t: self.idf(t) for t in query}
        return sum(w for t, w in weights.items() if not self.known(t)) / sum(weights.values())

    def entities(self, text: str) -> list[str]:
        """Names and numbers the question is about (normalised), minus the persona's own."""
        found: list[str] = []
        for sentence in re.split(r"(?<=[.!?:;])\s+", text.strip()):
            for position, word in enumerate(words(sentence)):
                lowered = normal(word)
                if lowered in self.own or lowered in ("i", "i'm", "i've", "i'd", "i'll"):
                    continue
                digit_or_acronym = word[0].isdigit() or (word.isupper() and len(word) >= 2)
                # A capital inside a sentence marks a name; at its start only a known one.
                named = word[0].isupper() and (position > 0 or lowered in self.proper_nouns)
                if digit_or_acronym or (named and lowered not in STOP_WORDS):
                    found.append(lowered)
        return list(dict.fromkeys(found))

    def missing(self, entities: Sequence[str], rows: Sequence[int]) -> list[str]:
        """The entities that none of the statements `rows` names, even as a close variant."""
        names = frozenset().union(*(self._names[r] for r in rows)) if rows else frozenset()
        return [e for e in entities if not any(close_variant(e, n) for n in names)]
