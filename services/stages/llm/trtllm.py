"""TensorRT-LLM through its high-level `LLM` API: the production GPU backend of the persona LLM.

One `LLM` instance per replica serves every concurrent conversation: TensorRT-LLM batches the
requests in flight (a new request joins the running batch at the next step), so throughput
grows with concurrency instead of requests queueing behind one another.

The `LLMBackend` interface is a blocking iterator used from a replica's worker thread, while
`LLM.generate_async` is asyncio: a request's result object binds to the event loop it is created
on. So the backend owns one event loop on a daemon thread; each `stream` submits a coroutine to
it (`run_coroutine_threadsafe`) that drives `generate_async(..., streaming=True)` and hands the
text back through a queue. Closing the iterator (barge-in, sentence bound reached, client gone)
cancels that coroutine, which aborts the request in the engine and frees its batch slot.

The model is a local folder only (nothing is fetched from a hub): a Hugging Face checkpoint for
the PyTorch runtime, or an engine folder built by `trtllm-build` for the TensorRT runtime. The
prompt is the tokenizer's own chat template. tensorrt-llm installs on CUDA machines only.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from services.core.backend import BackendError, BackendOptions, Capabilities
from services.core.types import ChatMessage
from services.stages.llm.base import LLMBackend
from services.stages.sdk import import_sdk

INSTALL_HINT = (
    "the trtllm backend needs TensorRT-LLM, which installs on a CUDA machine only: "
    "pip install tensorrt-llm --extra-index-url https://pypi.nvidia.com"
)
_END = object()


class TensorRTLLMOptions(BackendOptions):
    """Options of the TensorRT-LLM backend (engine sizing is per replica)."""

    model_dir: str | None = Field(
        None,
        min_length=1,
        description="Local Hugging Face checkpoint folder, or a trtllm-build engine folder "
        "(rank*.engine); required to load",
    )
    tokenizer_dir: str | None = Field(
        None, min_length=1, description="Tokenizer folder; None = model_dir's own tokenizer"
    )
    runtime: Literal["auto", "pytorch", "tensorrt"] = Field(
        "auto",
        description="auto = tensorrt for an engine folder, else the PyTorch runtime "
        "(tensorrt_llm.LLM)",
    )
    tensor_parallel_size: int = Field(1, ge=1, le=8, description="GPUs one model is split over")
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        "auto", description="Weights/activations dtype; auto = the checkpoint's"
    )
    max_batch_size: int = Field(
        64,
        ge=1,
        le=4096,
        description="Requests decoded together (in-flight batching); with an engine folder, at "
        "most its build-time max_batch_size",
    )
    max_num_tokens: int = Field(
        8192, ge=64, le=262144, description="Tokens one engine step processes (prefill + decode)"
    )
    kv_cache_free_gpu_memory_fraction: float = Field(
        0.85, gt=0, le=0.99, description="Share of the GPU memory left after the weights for KV"
    )
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling when temperature > 0")
    repetition_penalty: float = Field(1.1, ge=1.0, le=2.0, description="Penalty on repeats")
    token_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="Longest wait for the next token before the request fails"
    )


class _LoopThread:
    """An asyncio loop running on its own daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="trtllm-loop", daemon=True
        )
        self._thread.start()

    def submit(self, coro) -> Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self, timeout_s: float = 10.0) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):  # a stuck request must not block shutdown
            self.submit(cancel_all()).result(timeout_s)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self.loop.close()


class TensorRTLLM(LLMBackend):
    """Streaming chat on TensorRT-LLM with in-flight batching across concurrent requests.

    `stream` yields exactly one piece per generated token (the token's text, or "" while the
    detokenizer holds back an incomplete character), so the stage's token counter and tokens/s
    are exact even when the engine returns several tokens in one step.
    """

    name = "trtllm"
    Options = TensorRTLLMOptions
    capabilities = Capabilities(streaming=True, gpu=True, batching=True)
    options: TensorRTLLMOptions

    def __init__(self, options: BackendOptions | None = None) -> None:
        super().__init__(options)
        self._llm: Any = None
        self._loop: _LoopThread | None = None
        self._in_flight = 0
        self._runtime = ""

    def _load(self) -> None:
        opts = self.options
        # The SDK first: on a machine without it, that is the problem to name.
        trtllm = import_sdk("tensorrt_llm", INSTALL_HINT)
        llmapi = import_sdk("tensorrt_llm.llmapi", INSTALL_HINT)
        if not opts.model_dir:
            raise BackendError("the trtllm backend needs options.model_dir (a local model folder)")
        model_dir = Path(opts.model_dir).expanduser()
        if not model_dir.is_dir():
            raise BackendError(f"TensorRT-LLM model folder not found: {model_dir}")
        tokenizer_dir = Path(opts.tokenizer_dir).expanduser() if opts.tokenizer_dir else None
        if tokenizer_dir is not None and not tokenizer_dir.is_dir():
            raise BackendError(f"tokenizer folder not found: {tokenizer_dir}")
        runtime = opts.runtime
        if runtime == "auto":
            runtime = "tensorrt" if any(model_dir.glob("rank*.engine")) else "pytorch"
        # In TensorRT-LLM >= 1.0 `tensorrt_llm.LLM` is the PyTorch runtime; prebuilt engines
        # load through the TensorRT runtime's LLM class, which has the same API.
        llm_class = (
            import_sdk("tensorrt_llm._tensorrt_engine", INSTALL_HINT).LLM
            if runtime == "tensorrt"
            else trtllm.LLM
        )
        try:
            llm = llm_class(
                model=str(model_dir),
                tokenizer=str(tokenizer_dir) if tokenizer_dir else None,
                tensor_parallel_size=opts.tensor_parallel_size,
                dtype=opts.dtype,
                max_batch_size=opts.max_batch_size,
                max_num_tokens=opts.max_num_tokens,
                kv_cache_config=llmapi.KvCacheConfig(
                    free_gpu_memory_fraction=opts.kv_cache_free_gpu_memory_fraction
                ),
            )
        except Exception as exc:  # unsupported architecture, bad config, CUDA out of memory...
            raise BackendError(f"cannot load TensorRT-LLM model from {model_dir}: {exc}") from exc
        if getattr(llm, "tokenizer", None) is None:
            llm.shutdown()
            raise BackendError(f"no tokenizer in {model_dir}: set options.tokenizer_dir")
        self._sampling_params = trtllm.SamplingParams
        self._llm, self._runtime = llm, runtime
        self._loop = _LoopThread()

    def _prompt(self, messages: Sequence[ChatMessage]) -> str:
        try:
            return self._llm.tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in messages],
                tokenize=False,
                add_generation_prompt=True,
            )
        except Exception as exc:  # jinja errors, e.g. a template that rejects a system turn
            raise BackendError(f"the model's chat template failed: {exc}") from exc

    def _sampling(self, max_tokens: int, temperature: float) -> Any:
        # top_k=1 is greedy in every TensorRT-LLM version (temperature=0 is not, in older ones);
        # the chat template already holds BOS, so the tokenizer must not add another.
        sampling = (
            {"temperature": temperature, "top_p": self.options.top_p}
            if temperature > 0
            else {"top_k": 1}
        )
        return self._sampling_params(
            max_tokens=max_tokens,
            repetition_penalty=self.options.repetition_penalty,
            add_special_tokens=False,
            **sampling,
        )

    def _stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, temperature: float
    ) -> Iterator[str]:
        loop = self._loop
        if loop is None:
            raise BackendError("the trtllm backend was closed")
        prompt = self._prompt(messages)
        params = self._sampling(max_tokens, temperature)
        pieces: queue.Queue = queue.Queue()
        started, finished = threading.Event(), threading.Event()
        future = loop.submit(self._generate(prompt, params, pieces, started, finished))
        try:
            while True:
                try:
                    item = pieces.get(timeout=self.options.token_timeout_s)
                except queue.Empty:
                    raise BackendError(
                        f"TensorRT-LLM produced no token for {self.options.token_timeout_s} s"
                    ) from None
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise BackendError(f"TensorRT-LLM generation failed: {item}") from item
                yield item
        finally:
            # Cancelling the coroutine aborts the request in the engine; wait (bounded) so the
            # batch slot is free when a barge-in's next request arrives.
            # A coroutine cancelled before it started never reaches the engine: nothing to wait.
            future.cancel()
            if started.is_set():
                finished.wait(self.options.token_timeout_s)

    async def _generate(
        self,
        prompt: str,
        params: Any,
        pieces: queue.Queue,
        started: threading.Event,
        finished: threading.Event,
    ) -> None:
        """Runs on the backend's loop: one request, its tokens put on `pieces` as they come.

        No `await` comes before the `try`, so once started it always reaches `finally`.
        """
        started.set()
        request = None
        self._in_flight += 1
        try:
            request = self._llm.generate_async(prompt, sampling_params=params, streaming=True)
            async for output in request:
                completion = output.outputs[0]
                count = len(completion.token_ids_diff)
                text = completion.text_diff
                if count or text:
                    pieces.put(text)
                    for _ in range(count - 1):
                        pieces.put("")
            pieces.put(_END)
        except asyncio.CancelledError:
            # The consumer left (it ignores this), or the backend is closing (it must not hang).
            pieces.put(BackendError("generation cancelled: the backend is closing"))
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the consumer's thread
            pieces.put(exc)
        finally:
            self._in_flight -= 1
            if request is not None and not request.finished:
                with contextlib.suppress(Exception):  # aborting a request that just ended
                    request.abort()
            finished.set()

    def health(self) -> dict[str, Any]:
        return {**super().health(), "runtime": self._runtime, "in_flight": self._in_flight}

    def close(self) -> None:
        with self._lock:
            if self._loop is not None:
                self._loop.stop()
                self._loop = None
            if self._llm is not None:
                self._llm.shutdown()
                self._llm = None
            super().close()
