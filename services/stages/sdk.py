"""Importing a backend's SDK where it is used, with an install hint when it is missing.

Backend modules must import on a machine without their SDK: the config schema imports the chosen
backend's module to read its `Options` (a CPU router validates a GPU config), and the registry
lists every backend. So no backend module imports its SDK (faster-whisper, llama.cpp, torch,
piper, moderngl, ...) at module level; `_load` (or the code that needs it) calls `import_sdk`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from services.core.backend import BackendError


class MissingSDKError(ImportError, BackendError):
    """A backend's SDK or model package is not installed.

    Both an `ImportError` (what the registry and the config schema report as a missing package)
    and a `BackendError` (what callers of `load()` handle), so that every caller that handled
    the error before the import moved here still does.
    """


def import_sdk(module: str, hint: str) -> ModuleType:
    """Import `module`, or raise `MissingSDKError(hint)` chained to the original error.

    Args:
        module: Dotted module name, e.g. "faster_whisper" or "piper.const".
        hint: The whole message: what needs the module and how to install it.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingSDKError(hint, name=module) from exc
