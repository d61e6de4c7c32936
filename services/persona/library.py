"""The persona library: every pack in a folder, served as cached `PersonaRuntime`s.

Many personas per cluster: packs are found in a directory, loaded on demand, cached by mtime.

Adding a persona is dropping a pack folder into `packs_dir`: the next `get` or `list` sees it,
with no code change and no restart. Each `get` stats the pack's files (cheap) and reloads the
pack and its index when any changed, so an edited corpus is served after the next lookup. Index
files live in `index_dir/<id>/` and are shared by replicas pointing at the same folder.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.persona.embedder import Embedder, create_embedder
from services.persona.model_parts import user_cache
from services.persona.pack import PACK_FILE, PackError, load_config, load_pack, pack_signature
from services.persona.runtime import PersonaRuntime

log = logging.getLogger(__name__)

PACKS_DIR = Path(__file__).resolve().parent / "packs"


def default_index_dir() -> Path:
    """`$AVATAR_PERSONA_INDEX_DIR`, else a per-user cache folder."""
    return user_cache("AVATAR_PERSONA_INDEX_DIR", "persona-index")


class UnknownPersonaError(KeyError):
    """No pack with that id; the message lists the valid ids.

    Attributes:
        persona_id: The id that was asked for.
        valid: The ids of the pack folders present when it was asked.
    """

    def __init__(self, persona_id: str, valid: list[str]) -> None:
        self.persona_id = persona_id
        self.valid = valid
        super().__init__(persona_id)

    def __str__(self) -> str:
        listed = ", ".join(self.valid) if self.valid else "(none)"
        return f"unknown persona {self.persona_id!r}; valid personas: {listed}"


@dataclass(frozen=True)
class PersonaSummary:
    """One row of `PersonaRegistry.list()`.

    Attributes:
        id: Persona id (the folder name).
        display_name: Name shown to users.
        role: One line: who they are.
        path: The pack folder.
    """

    id: str
    display_name: str
    role: str
    path: str


@dataclass
class _Entry:
    """A loaded runtime and the `pack_signature` of the files it was loaded from."""

    signature: tuple
    runtime: PersonaRuntime


class PersonaRegistry:
    """Persona packs under `packs_dir`, each served as a cached `PersonaRuntime`.

    Args:
        packs_dir: Folder of pack folders (`<id>/persona.yaml`); default: the bundled packs.
        index_dir: Where statement indexes are stored; None = `default_index_dir()`.
        embedder: Shared embedder; None = the default embedder, built on first use by
            `embedder_factory`, so listing packs never loads a model.
        embedder_factory: Builds the embedder when none was given.
    """

    def __init__(
        self,
        packs_dir: str | Path | None = None,
        index_dir: str | Path | None = None,
        *,
        embedder: Embedder | None = None,
        embedder_factory: Callable[[], Embedder] = create_embedder,
    ) -> None:
        self.packs_dir = Path(packs_dir) if packs_dir is not None else PACKS_DIR
        self.index_dir = Path(index_dir) if index_dir is not None else default_index_dir()
        self._embedder = embedder
        self._embedder_factory = embedder_factory
        self._cache: dict[str, _Entry] = {}
        self._lock = threading.RLock()
        # One lock per persona: building one persona's index must not stall the others' turns.
        self._load_locks: dict[str, threading.Lock] = {}

    @property
    def embedder(self) -> Embedder:
        """The shared embedder, built on first use."""
        with self._lock:
            if self._embedder is None:
                self._embedder = self._embedder_factory()
            return self._embedder

    def _pack_dirs(self) -> dict[str, Path]:
        if not self.packs_dir.is_dir():
            return {}
        return {
            p.name: p
            for p in sorted(self.packs_dir.iterdir())
            if p.is_dir() and not p.name.startswith(".") and (p / PACK_FILE).is_file()
        }

    def ids(self) -> list[str]:
        """Ids of the pack folders present now (valid or not)."""
        return sorted(self._pack_dirs())

    def list(self) -> list[PersonaSummary]:
        """Valid personas present now; broken packs are logged and left out (see `errors`)."""
        summaries = []
        for pack_id, path in self._pack_dirs().items():
            try:
                config = load_config(path)
            except PackError as exc:
                log.warning("persona pack %s skipped: %s", pack_id, exc)
                continue
            summaries.append(PersonaSummary(config.id, config.display_name, config.role, str(path)))
        return summaries

    def errors(self) -> dict[str, str]:
        """Pack id -> one-line error, for every pack folder that does not load."""
        problems = {}
        for pack_id, path in self._pack_dirs().items():
            try:
                load_pack(path)
            except PackError as exc:
                problems[pack_id] = str(exc)
        return problems

    def get(self, persona_id: str) -> PersonaRuntime:
        """The runtime of `persona_id`, (re)loaded if its files changed since last time.

        Raises:
            UnknownPersonaError: No such pack folder.
            PackError: The pack exists but is invalid.
        """
        path = self.packs_dir / persona_id
        # Ids are folder names: refuse anything that could step outside packs_dir.
        if (
            not persona_id
            or "/" in persona_id
            or "\\" in persona_id
            or persona_id.startswith(".")
            or not (path / PACK_FILE).is_file()
        ):
            with self._lock:
                self._cache.pop(persona_id, None)
            raise UnknownPersonaError(persona_id, self.ids())
        signature = pack_signature(path)
        with self._lock:
            entry = self._cache.get(persona_id)
            if entry is not None and entry.signature == signature:
                return entry.runtime
            load_lock = self._load_locks.setdefault(persona_id, threading.Lock())
        with load_lock:
            with self._lock:
                entry = self._cache.get(persona_id)
            if entry is not None and entry.signature == signature:
                return entry.runtime  # another thread loaded it while we waited
            pack = load_pack(path)
            started = time.perf_counter()
            # A first load with an embedder embeds the statements and ~1,000 guard examples
            # (mpnet: ~25 s on 2 cores); later loads read both from index_dir.
            log.info("persona %s: loading (index and guard vectors in %s)", pack.id, self.index_dir)
            runtime = PersonaRuntime.from_pack(pack, self.embedder, self.index_dir)
            with self._lock:
                self._cache[persona_id] = _Entry(signature, runtime)
            log.info(
                "persona %s loaded in %.1f s: %d statements (index %s, embedder %s)",
                persona_id,
                time.perf_counter() - started,
                len(runtime.index),
                "built" if runtime.index.built else "loaded",
                runtime.embedder.name,
            )
            return runtime

    def __contains__(self, persona_id: str) -> bool:
        return persona_id in self._pack_dirs()
