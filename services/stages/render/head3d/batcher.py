"""One GL thread per renderer that runs every GL call and renders queued frames in batches.

Concurrent render streams each queue frame requests and wait on futures; the thread takes the
first request, gathers what else is queued (up to `max_batch`, waiting at most `wait_s` for
more), renders them together, and hands each stream its own frame. Other GL work (loading an
asset, releasing the context) is queued as calls on the same thread, since a GL context is
current on one thread only and some EGL drivers refuse a second thread outright.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from services.core.backend import BackendError

_Job = TypeVar("_Job")
_Result = TypeVar("_Result")


@dataclass
class _Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: Future = field(default_factory=Future)


@dataclass
class _Frame(Generic[_Job]):
    job: _Job
    future: Future = field(default_factory=Future)


_STOP = object()


class FrameBatcher(Generic[_Job, _Result]):
    """Runs `render_batch` over batches of submitted jobs, and other calls, on one thread.

    Args:
        render_batch: Renders a list of jobs; returns per job its result or the exception
            that spoiled it (raising fails the whole batch).
        max_batch: Most jobs per batch.
        wait_s: How long a batch waits for more jobs after its first one; 0 takes only what
            is already queued.
        name: Thread name.
    """

    def __init__(
        self,
        render_batch: Callable[[list[_Job]], list[_Result | BaseException]],
        *,
        max_batch: int,
        wait_s: float,
        name: str,
    ) -> None:
        self._render_batch = render_batch
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stats_lock = threading.Lock()  # guards the stats and the closed flag
        self.batch_sizes: Counter[int] = Counter()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` on the GL thread, between batches, and return its result."""
        return self._put(_Call(fn, args)).future.result()

    def submit(self, job: _Job) -> Future:
        """Queue one frame job; the future resolves to its result."""
        return self._put(_Frame(job)).future

    def _put(self, item: _Call | _Frame) -> Any:
        with self._stats_lock:  # nothing may queue behind the stop marker: it would wait forever
            if self._closed:
                raise BackendError("head3d renderer is closed")
            self._queue.put(item)
        return item

    def close(self) -> None:
        """Stop the thread; queued frames fail with `BackendError`. Calls already queued run."""
        with self._stats_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()

    def stats(self) -> dict[str, Any]:
        """Batches rendered so far: count, frames, largest, and the size histogram."""
        with self._stats_lock:
            sizes = dict(sorted(self.batch_sizes.items()))
        batches = sum(sizes.values())
        frames = sum(size * count for size, count in sizes.items())
        return {
            "batches": batches,
            "batched_frames": frames,
            "largest_batch": max(sizes, default=0),
            "batch_sizes": sizes,
        }

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            if isinstance(item, _Call):
                self._run_call(item)
                continue
            frames, calls, stop = self._gather(item)
            self._run_batch(frames)
            for call in calls:
                self._run_call(call)
            if stop:
                break
        self._drain()

    def _gather(self, first: _Frame) -> tuple[list[_Frame], list[_Call], bool]:
        frames, calls = [first], []
        deadline = time.monotonic() + self.wait_s
        while len(frames) < self.max_batch:
            try:
                remaining = deadline - time.monotonic()
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if item is _STOP:
                return frames, calls, True
            if isinstance(item, _Call):
                calls.append(item)  # after this batch: it may release what the batch draws
            else:
                frames.append(item)
        return frames, calls, False

    def _run_batch(self, frames: list[_Frame]) -> None:
        # A stream that stopped listening cancelled its futures: skip those frames.
        live = [f for f in frames if f.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            results = self._render_batch([f.job for f in live])
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting stream
            results = [exc] * len(live)
        else:
            with self._stats_lock:
                self.batch_sizes[len(live)] += 1
        for frame, result in zip(live, results, strict=True):
            if isinstance(result, BaseException):
                frame.future.set_exception(result)
            else:
                frame.future.set_result(result)

    @staticmethod
    def _run_call(call: _Call) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        try:
            call.future.set_result(call.fn(*call.args))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            call.future.set_exception(exc)

    def _drain(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Call):
                self._run_call(item)
            elif isinstance(item, _Frame) and item.future.set_running_or_notify_cancel():
                item.future.set_exception(BackendError("head3d renderer is closed"))
