"""Bridge blocking generators (local models) into asyncio without stalling the event loop.

A local backend is synchronous; the orchestrator is async so that the same turn logic drives
in-process backends and Ray Serve handles. `iterate_in_thread` runs a blocking iterator in a
worker thread and hands its items to the loop as they appear; closing the async iterator stops
the worker at its next item.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


async def iterate_in_thread(make: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """Yield the items of `make()` (called in a worker thread) as they are produced."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def post(item: object) -> bool:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
            return True
        except RuntimeError:  # the loop is closed: the consumer is gone
            return False

    def work() -> None:
        iterator = None
        try:
            iterator = make()
            for item in iterator:
                if stop.is_set() or not post(item):
                    break
            post(_END)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            post(exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def drive(agen: AsyncIterator[T]) -> Iterator[T]:
    """Iterate an async generator from synchronous code on a private event loop.

    Between items the loop is paused, but work already handed to threads goes on, and it runs
    again while the caller waits for the next item.
    """
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                item = loop.run_until_complete(agen.__anext__())
            except StopAsyncIteration:
                return
            yield item
    finally:
        loop.run_until_complete(agen.aclose())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
