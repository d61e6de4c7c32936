"""GPU backend family on a real CUDA GPU (skipped elsewhere): transformers LLM and the head
renderer on the GPU's EGL. Run on a GPU node: `python -m pytest tests/gpu -m gpu`."""

from __future__ import annotations

import time

import numpy as np
import pytest

from services.core.registry import create_backend
from services.core.types import ChatMessage, PhonemeTiming, SpeechChunk

pytestmark = pytest.mark.gpu


def test_transformers_llm_streams_on_cuda():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    assert torch.cuda.is_available()
    llm = create_backend("llm", "transformers", {"device": "cuda"})
    llm.load()
    assert next(llm._model.parameters()).is_cuda
    messages = [ChatMessage("user", "What do you like to do on weekends?")]
    start = time.perf_counter()
    pieces = list(llm.stream(messages, max_tokens=40))
    elapsed = time.perf_counter() - start
    assert 1 <= len(pieces) <= 40 and "".join(pieces).strip()
    print(f"transformers on CUDA: {len(pieces)} pieces in {elapsed:.2f} s")


def test_head_renderer_uses_the_gpu_egl():
    renderer = create_backend("render", "head3d", {"width": 512, "height": 512})
    renderer.load()
    gl_renderer = renderer.health()["gl_renderer"]
    assert "llvmpipe" not in gl_renderer.lower(), f"rendering on the CPU: {gl_renderer}"
    speech = SpeechChunk(
        samples=np.zeros(22050 * 2, dtype=np.float32),
        sample_rate=22050,
        text="ah",
        index=0,
        phonemes=(PhonemeTiming("_", 0.0, 0.3), PhonemeTiming("a", 0.3, 1.7),
                  PhonemeTiming("_", 1.7, 2.0)),
    )  # fmt: skip
    start = time.perf_counter()
    frames = list(renderer.render(speech))
    elapsed = time.perf_counter() - start
    assert len(frames) == 50
    assert max(f.blendshapes.get("jawOpen", 0) for f in frames) > 0.3
    print(f"head3d on {gl_renderer}: {len(frames) / elapsed:.0f} fps at 512x512")
