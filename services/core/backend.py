"""What every stage backend shares: options, capabilities, lifecycle.

A backend is built from a validated pydantic `Options` model, loads its model lazily in `load()`
(so a Ray replica can be constructed cheaply and report readiness separately), and answers
`health()` with a small JSON-able dict.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class BackendOptions(BaseModel):
    """Base for every backend's options: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Capabilities:
    """What a backend declares it can do, so callers never guess."""

    streaming: bool = False
    timings: bool = False
    gpu: bool = False
    batching: bool = False
    needs_network: bool = False


class BackendError(RuntimeError):
    """A backend failed in a way the caller can report (bad input, model failure)."""


class Backend:
    """Lifecycle shared by all stage backends."""

    name: ClassVar[str] = "base"
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()
        self._loaded = False
        # Local models (llama.cpp, onnxruntime sessions, GL contexts) are not re-entrant.
        self._lock = threading.RLock()

    @classmethod
    def from_options(cls, options: dict[str, Any] | None = None) -> Backend:
        return cls(cls.Options(**(options or {})))

    def load(self) -> None:
        """Load models; idempotent. Subclasses override `_load`."""
        with self._lock:
            if not self._loaded:
                self._load()
                self._loaded = True

    def _load(self) -> None:
        """Load heavy resources. Default: nothing to load."""

    @property
    def loaded(self) -> bool:
        return self._loaded

    def health(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "loaded": self._loaded,
            "ok": True,
            "capabilities": asdict(self.capabilities),
        }

    def close(self) -> None:
        """Release resources; the backend may be loaded again afterwards."""
        self._loaded = False
