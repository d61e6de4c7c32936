"""The TensorRT-LLM backend on a real GPU: a short generation, a cancel, concurrent requests.

Needs CUDA, tensorrt_llm (pip install tensorrt-llm --extra-index-url https://pypi.nvidia.com)
and a local model folder (a small chat model's Hugging Face checkpoint, or an engine folder):

    AVATAR_TRTLLM_MODEL_DIR=/models/llm python -m pytest tests/gpu/test_trtllm.py -m gpu
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from services.core.registry import create_backend
from services.core.types import ChatMessage

pytestmark = pytest.mark.gpu

MODEL_ENV = "AVATAR_TRTLLM_MODEL_DIR"
MESSAGES = (
    ChatMessage("system", "You are a friendly AI avatar. Answer in one to three short sentences."),
    ChatMessage("user", "What do you like to do on weekends?"),
)


@pytest.fixture(scope="module")
def trtllm():
    pytest.importorskip("tensorrt_llm", reason="tensorrt_llm is not installed")
    model_dir = os.environ.get(MODEL_ENV)
    if not model_dir:
        pytest.skip(f"set {MODEL_ENV} to a local model folder to run the TensorRT-LLM tests")
    backend = create_backend(
        "llm",
        "trtllm",
        {"model_dir": model_dir, "max_batch_size": 8, "kv_cache_free_gpu_memory_fraction": 0.3},
    )
    backend.load()
    yield backend
    backend.close()


def test_short_generation_streams_tokens(trtllm):
    start = time.perf_counter()
    stream = trtllm.stream(MESSAGES, max_tokens=40)
    first = next(stream)
    ttft = time.perf_counter() - start
    pieces = [first, *stream]
    elapsed = time.perf_counter() - start
    assert 1 <= len(pieces) <= 40 and "".join(pieces).strip()
    print(f"trtllm: TTFT {ttft * 1000:.0f} ms, {len(pieces) / elapsed:.0f} tokens/s")


def test_cancel_aborts_and_frees_the_slot(trtllm):
    stream = trtllm.stream(MESSAGES, max_tokens=200)
    next(stream)
    stream.close()
    assert trtllm.health()["in_flight"] == 0
    assert "".join(trtllm.stream(MESSAGES, max_tokens=8)).strip()  # the engine still serves


def test_concurrent_requests_batch_on_one_engine(trtllm):
    replies: list[str] = []

    def talk() -> None:
        replies.append("".join(trtllm.stream(MESSAGES, max_tokens=24)))

    threads = [threading.Thread(target=talk) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(replies) == 8 and all(reply.strip() for reply in replies)
