"""The TensorRT-LLM backend without TensorRT-LLM (it installs on CUDA machines only).

Checked here: its options through AppConfig, the install hint when the SDK is missing, and the
sync-to-async bridge (streaming, cancellation, timeouts, errors, many concurrent requests on one
`LLM`) against `FakeTensorRTLLM` below: a TEST DOUBLE of the part of `tensorrt_llm`'s API the
backend calls (`LLM(...)`, `llm.tokenizer.apply_chat_template`, `llm.generate_async(...,
streaming=True)` returning an async iterable with `abort()`, `SamplingParams`, `KvCacheConfig`).
It lives only in this test; the real engine runs in tests/gpu/test_trtllm.py.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import types
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import ValidationError

from services.core.backend import BackendError
from services.core.config import AppConfig, TurnSettings
from services.core.registry import create_backend
from services.core.types import ChatMessage
from services.stages.sdk import MissingSDKError
from services.turn.orchestrator import llm_sentences


@dataclass
class Knobs:
    """How the test double behaves in one test."""

    step_s: float = 0.0  # delay before each engine step
    tokens_per_step: int = 1  # tokens one streamed RequestOutput carries
    fail_at_step: int | None = None  # raise inside the engine at this step
    gather: int = 0  # first step waits until this many requests are in flight
    hold_after: int | None = None  # after this many steps, wait until cancelled
    instances: list[Any] = field(default_factory=list)


def reply_for(prompt: str) -> str:
    """The double's answer: it names the last user message, so cross-talk would show."""
    user = prompt.rsplit("<user>", 1)[-1].removesuffix("<assistant>")
    return f"You said {user}. That is nice. Tell me more."


def make_fake_sdk(knobs: Knobs) -> dict[str, types.ModuleType]:
    """`sys.modules` entries standing in for tensorrt_llm (test double, see module docstring)."""

    class FakeTokenizer:
        def apply_chat_template(self, conversation, *, tokenize, add_generation_prompt):
            assert tokenize is False and add_generation_prompt is True
            turns = "".join(f"<{m['role']}>{m['content']}" for m in conversation)
            return turns + "<assistant>"

    class FakeSamplingParams:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

    class FakeKvCacheConfig:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

    @dataclass
    class Completion:
        text_diff: str
        token_ids_diff: list[int]

    @dataclass
    class Output:
        outputs: list[Completion]

    class FakeRequest:
        """Streaming result: async iteration yields one output per engine step."""

        def __init__(self, engine: FakeTensorRTLLM, tokens: list[str]) -> None:
            self.engine, self.tokens, self.steps = engine, tokens, 0
            self.aborted = False
            self.finished = False
            engine.in_flight += 1
            engine.max_in_flight = max(engine.max_in_flight, engine.in_flight)
            if engine.in_flight >= knobs.gather:
                engine.all_in.set()

        def abort(self) -> None:
            self.aborted = True
            self._finish()

        def _finish(self) -> None:
            if not self.finished:
                self.finished = True
                self.engine.in_flight -= 1

        def __aiter__(self):
            return self

        async def __anext__(self) -> Output:
            if self.finished:
                raise StopAsyncIteration
            if knobs.gather and self.steps == 0:
                await asyncio.wait_for(self.engine.all_in.wait(), 5)
            await asyncio.sleep(knobs.step_s)
            if knobs.hold_after is not None and self.steps >= knobs.hold_after:
                await asyncio.Event().wait()  # a slow engine: only cancellation ends this
            if self.aborted:
                raise StopAsyncIteration
            self.steps += 1
            if knobs.fail_at_step == self.steps:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            batch, self.tokens = (
                self.tokens[: knobs.tokens_per_step],
                self.tokens[knobs.tokens_per_step :],
            )
            if not self.tokens:
                self._finish()
            return Output([Completion("".join(batch), list(range(len(batch))))])

    class FakeTensorRTLLM:
        """Test double of `tensorrt_llm.LLM` (one engine, many requests in flight)."""

        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs
            self.tokenizer = FakeTokenizer()
            self.requests: list[FakeRequest] = []
            self.threads: set[int] = set()
            self.in_flight = self.max_in_flight = 0
            self.all_in = asyncio.Event()
            self.shut_down = False
            knobs.instances.append(self)

        def generate_async(self, inputs, sampling_params=None, streaming=False):
            asyncio.get_running_loop()  # a result binds to the running loop, as in TRT-LLM
            assert streaming is True
            self.threads.add(threading.get_ident())
            words = reply_for(inputs).split(" ")
            tokens = [words[0]] + [" " + w for w in words[1:]]
            tokens = tokens[: sampling_params.kwargs["max_tokens"]]
            request = FakeRequest(self, tokens)
            self.requests.append(request)
            return request

        def shutdown(self) -> None:
            self.shut_down = True

    class FakeEngineLLM(FakeTensorRTLLM):
        """Test double of `tensorrt_llm._tensorrt_engine.LLM` (prebuilt engine folders)."""

    root = types.ModuleType("tensorrt_llm")
    root.LLM = FakeTensorRTLLM
    root.SamplingParams = FakeSamplingParams
    llmapi = types.ModuleType("tensorrt_llm.llmapi")
    llmapi.KvCacheConfig = FakeKvCacheConfig
    engine = types.ModuleType("tensorrt_llm._tensorrt_engine")
    engine.LLM = FakeEngineLLM
    return {
        "tensorrt_llm": root,
        "tensorrt_llm.llmapi": llmapi,
        "tensorrt_llm._tensorrt_engine": engine,
    }


@pytest.fixture
def knobs(monkeypatch) -> Knobs:
    knobs = Knobs()
    for name, module in make_fake_sdk(knobs).items():
        monkeypatch.setitem(sys.modules, name, module)
    return knobs


@pytest.fixture
def backend(knobs, tmp_path):
    backend = create_backend("llm", "trtllm", {"model_dir": str(tmp_path)})
    backend.load()
    yield backend
    backend.close()


def ask(text: str) -> list[ChatMessage]:
    return [ChatMessage("system", "Be brief."), ChatMessage("user", text)]


def test_options_validate_through_app_config():
    config = AppConfig(
        stages={
            "llm": {
                "backend": "trtllm",
                "options": {"model_dir": "/models/llm", "max_batch_size": 128, "dtype": "bfloat16"},
            }
        }
    )
    options = config.stages.llm.options
    assert (options.model_dir, options.max_batch_size, options.dtype) == (
        "/models/llm",
        128,
        "bfloat16",
    )
    for bad in (
        {"max_batch_size": 0},
        {"kv_cache_free_gpu_memory_fraction": 1.0},
        {"tensor_parallel_size": 9},
        {"dtype": "int4"},
        {"runtime": "vllm"},
    ):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            AppConfig(stages={"llm": {"backend": "trtllm", "options": bad}})
    with pytest.raises(ValidationError, match="Extra inputs"):
        AppConfig(stages={"llm": {"backend": "trtllm", "options": {"engine_path": "/x"}}})


def test_missing_sdk_names_the_nvidia_index(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)  # makes `import tensorrt_llm` fail
    backend = create_backend("llm", "trtllm", {"model_dir": str(tmp_path)})
    with pytest.raises(MissingSDKError) as err:
        backend.load()
    assert "pip install tensorrt-llm --extra-index-url https://pypi.nvidia.com" in str(err.value)
    assert isinstance(err.value, BackendError) and not backend.loaded


def test_model_folder_is_required_and_must_exist(knobs, tmp_path):
    with pytest.raises(BackendError, match="needs options.model_dir"):
        create_backend("llm", "trtllm").load()
    with pytest.raises(BackendError, match="not found"):
        create_backend("llm", "trtllm", {"model_dir": str(tmp_path / "none")}).load()
    assert not knobs.instances


def test_engine_is_built_from_the_options(knobs, tmp_path):
    options = {
        "model_dir": str(tmp_path),
        "tokenizer_dir": str(tmp_path),
        "max_batch_size": 32,
        "max_num_tokens": 4096,
        "kv_cache_free_gpu_memory_fraction": 0.5,
        "tensor_parallel_size": 2,
        "dtype": "float16",
    }
    backend = create_backend("llm", "trtllm", options)
    backend.load()
    (llm,) = knobs.instances
    kv = llm.kwargs.pop("kv_cache_config")
    assert kv.kwargs == {"free_gpu_memory_fraction": 0.5}
    assert llm.kwargs == {
        "model": str(tmp_path),
        "tokenizer": str(tmp_path),
        "tensor_parallel_size": 2,
        "dtype": "float16",
        "max_batch_size": 32,
        "max_num_tokens": 4096,
    }
    assert type(llm).__name__ == "FakeTensorRTLLM"  # an HF folder: the PyTorch runtime
    assert backend.health()["runtime"] == "pytorch"
    backend.close()
    assert llm.shut_down and not backend.loaded


def test_an_engine_folder_loads_through_the_tensorrt_runtime(knobs, tmp_path):
    (tmp_path / "rank0.engine").write_bytes(b"")
    backend = create_backend("llm", "trtllm", {"model_dir": str(tmp_path)})
    backend.load()
    assert type(knobs.instances[0]).__name__ == "FakeEngineLLM"
    assert backend.health() | {"runtime": "tensorrt", "in_flight": 0} == backend.health()
    backend.close()


def test_streams_one_piece_per_token_with_the_chat_template(backend, knobs):
    knobs.tokens_per_step = 3  # the engine may return several tokens per step
    pieces = list(backend.stream(ask("hello"), max_tokens=100))
    assert "".join(pieces) == "You said hello. That is nice. Tell me more."
    assert len(pieces) == 9  # one per token; the step's text rides on its first piece
    assert pieces[:3] == ["You said hello.", "", ""]
    (request,) = knobs.instances[0].requests
    assert request.finished and not request.aborted
    assert backend.health()["in_flight"] == 0


def test_sampling_params_passed_to_the_engine(backend, knobs, monkeypatch):
    seen: list[dict[str, Any]] = []
    llm = knobs.instances[0]
    real = llm.generate_async

    def spy(inputs, sampling_params=None, streaming=False):
        seen.append(sampling_params.kwargs)
        return real(inputs, sampling_params=sampling_params, streaming=streaming)

    monkeypatch.setattr(llm, "generate_async", spy)
    assert len(list(backend.stream(ask("hi"), max_tokens=4))) == 4
    list(backend.stream(ask("hi"), max_tokens=8, temperature=0.7))
    common = {"repetition_penalty": 1.1, "add_special_tokens": False}
    assert seen == [
        {"max_tokens": 4, "top_k": 1, **common},
        {"max_tokens": 8, "temperature": 0.7, "top_p": 0.95, **common},
    ]


def test_closing_the_stream_aborts_the_request(backend, knobs):
    knobs.hold_after = 4
    stream = backend.stream(ask("a long question"), max_tokens=100)
    assert [next(stream), next(stream)] == ["You", " said"]
    stream.close()  # barge-in
    (request,) = knobs.instances[0].requests
    assert request.aborted and request.steps <= 4
    assert backend.health()["in_flight"] == 0


def test_sentence_bound_stops_generation_in_the_engine(backend, knobs):
    knobs.hold_after = 5  # the first sentence is 3 tokens; the engine would go on
    chunks = list(llm_sentences(backend, ask("hey"), TurnSettings(max_sentences=1)))
    assert [c.text for c in chunks] == ["You said hey."]
    assert chunks[0].tokens >= 3 and chunks[0].first_token_s is not None
    (request,) = knobs.instances[0].requests
    assert request.aborted


def test_many_concurrent_requests_share_one_engine(backend, knobs):
    knobs.gather = 8  # each request's first step waits for all 8: serialising would time out
    knobs.step_s = 0.001
    replies: dict[int, str] = {}
    errors: list[BaseException] = []

    def talk(i: int) -> None:
        try:
            replies[i] = "".join(backend.stream(ask(f"number {i}"), max_tokens=100))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=talk, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert replies == {i: f"You said number {i}. That is nice. Tell me more." for i in range(8)}
    (llm,) = knobs.instances
    assert llm.max_in_flight == 8 and len(llm.requests) == 8
    # Every request was submitted from the backend's one loop thread, none from a caller's.
    assert len(llm.threads) == 1 and not llm.threads & {t.ident for t in threads}


def test_engine_error_reaches_the_caller(backend, knobs):
    knobs.fail_at_step = 3
    stream = backend.stream(ask("hi"), max_tokens=100)
    with pytest.raises(BackendError, match="generation failed: CUDA error"):
        list(stream)
    assert backend.health()["in_flight"] == 0


def test_a_stalled_engine_times_out_and_is_aborted(knobs, tmp_path):
    knobs.step_s = 5.0
    backend = create_backend("llm", "trtllm", {"model_dir": str(tmp_path), "token_timeout_s": 0.05})
    backend.load()
    with pytest.raises(BackendError, match="no token for 0.05 s"):
        list(backend.stream(ask("hi"), max_tokens=10))
    (request,) = knobs.instances[0].requests
    assert request.aborted
    backend.close()


def test_closing_the_backend_fails_open_streams_instead_of_hanging(backend, knobs):
    knobs.hold_after = 2
    stream = backend.stream(ask("hi"), max_tokens=100)
    next(stream)
    backend.close()
    with pytest.raises(BackendError):
        list(stream)
    assert knobs.instances[0].shut_down
    with pytest.raises(BackendError, match="closed"):
        list(create_backend("llm", "trtllm")._stream(ask("hi"), max_tokens=1, temperature=0))
