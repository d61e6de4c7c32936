"""The curated safety data that ships with the project: unsafe request types with example
phrasings, benign look-alikes and prototype questions for commonly avoided topics
(`unsafe_requests.yaml`), read by the meaning-based guard (`services.persona.guard`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

UNSAFE_REQUESTS = Path(__file__).with_name("unsafe_requests.yaml")


@dataclass(frozen=True)
class UnsafeRequests:
    """Example phrasings per unsafe category, and benign look-alikes that must not be refused.

    Attributes:
        examples: Every unsafe example, in file order.
        categories: The category of each entry of `examples`.
        benign: Ordinary questions sharing words with unsafe ones.
        topics: Prototype questions per commonly avoided topic name ("politics"), merged into a
            pack's topic of the same name.
        topic_neighbours: More phrasings per avoided topic, used only as neighbours in the
            guard's topic vote (by the plain similarity rule their breadth refused ordinary
            questions: "what's your favourite food?" near a competitors phrasing).
        disclosure: "Who am I talking to?" questions, beside the guard's built-in ones.
        disclosure_lookalikes: Questions sharing their words that are about something else.
    """

    examples: tuple[str, ...]
    categories: tuple[str, ...]
    benign: tuple[str, ...]
    topics: dict[str, tuple[str, ...]] = field(default_factory=dict)
    topic_neighbours: dict[str, tuple[str, ...]] = field(default_factory=dict)
    disclosure: tuple[str, ...] = ()
    disclosure_lookalikes: tuple[str, ...] = ()


def parse_unsafe_requests(data: dict) -> UnsafeRequests:
    """Validate and flatten `{categories: {name: [text]}, benign: [text], topics: {...},
    topic_neighbours: {...}, disclosure: [text], disclosure_lookalikes: [text]}` (all but
    `categories` optional)."""
    categories = data.get("categories")
    if not isinstance(categories, dict) or not categories:
        raise ValueError("unsafe requests: 'categories' must map names to example lists")
    examples: list[str] = []
    names: list[str] = []
    for name, items in categories.items():
        if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
            raise ValueError(f"unsafe requests: category {name!r} needs a list of non-empty texts")
        examples.extend(items)
        names.extend([str(name)] * len(items))
    lists = {}
    for name in ("benign", "disclosure", "disclosure_lookalikes"):
        items = data.get(name) or []
        if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
            raise ValueError(f"unsafe requests: {name!r} must be a list of non-empty texts")
        lists[name] = tuple(items)
    maps = {}
    for name in ("topics", "topic_neighbours"):
        value = data.get(name) or {}
        if not isinstance(value, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) and x.strip() for x in v)
            for v in value.values()
        ):
            raise ValueError(f"unsafe requests: {name!r} must map topic names to lists of texts")
        maps[name] = {str(k): tuple(v) for k, v in value.items()}
    return UnsafeRequests(
        tuple(examples),
        tuple(names),
        lists["benign"],
        maps["topics"],
        maps["topic_neighbours"],
        lists["disclosure"],
        lists["disclosure_lookalikes"],
    )


@cache
def load_unsafe_requests(path: Path = UNSAFE_REQUESTS) -> UnsafeRequests:
    """The curated set (parsed once per process)."""
    return parse_unsafe_requests(yaml.safe_load(path.read_text(encoding="utf-8")))
