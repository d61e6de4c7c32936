"""Backend name -> "module:Class", imported lazily.

A CPU replica never imports a GPU SDK: a backend's module is imported only when that backend is
asked for. An unknown name is an error that lists the valid ones.
"""

from __future__ import annotations

import importlib
from typing import Any

from services.core.backend import Backend, BackendOptions

BACKENDS: dict[str, dict[str, str]] = {
    "asr": {
        "whisper": "services.stages.asr.whisper:WhisperASR",
        "riva": "services.stages.asr.riva:RivaASR",
        "fake": "services.stages.asr.fake:FakeASR",
    },
    "llm": {
        "llama_cpp": "services.stages.llm.llama_cpp:LlamaCppLLM",
        "transformers": "services.stages.llm.transformers_backend:TransformersLLM",
        "trtllm": "services.stages.llm.trtllm:TensorRTLLM",
        "fake": "services.stages.llm.fake:FakeLLM",
    },
    "tts": {
        "piper": "services.stages.tts.piper:PiperTTS",
        "riva": "services.stages.tts.riva:RivaTTS",
        "espeak": "services.stages.tts.espeak:EspeakTTS",
        "fake": "services.stages.tts.fake:FakeTTS",
    },
    "render": {
        "head3d": "services.stages.render.head3d.backend:HeadRenderer",
        "fake": "services.stages.render.fake:FakeRenderer",
    },
}

STAGES = tuple(BACKENDS)


class UnknownBackendError(ValueError):
    """Raised for a stage or backend name that is not registered."""


def backend_names(stage: str) -> list[str]:
    if stage not in BACKENDS:
        raise UnknownBackendError(f"unknown stage {stage!r}; valid stages: {', '.join(STAGES)}")
    return sorted(BACKENDS[stage])


def backend_class(stage: str, name: str) -> type[Backend]:
    names = backend_names(stage)
    if name not in BACKENDS[stage]:
        raise UnknownBackendError(
            f"unknown {stage} backend {name!r}; valid {stage} backends: {', '.join(names)}"
        )
    module_name, _, attr = BACKENDS[stage][name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"{stage} backend {name!r} needs packages that are not installed ({exc}); "
            "see README 'Backends' for the extra to install"
        ) from exc
    return getattr(module, attr)


def create_backend(
    stage: str, name: str, options: BackendOptions | dict[str, Any] | None = None
) -> Backend:
    """Build (but do not load) a backend from its name and options (typed, or raw to validate)."""
    cls = backend_class(stage, name)
    if isinstance(options, BackendOptions):
        return cls(options)
    return cls.from_options(options)
