"""Admission control: can the stages take one more turn? Decided before the turn starts.

Without it, Serve queues what its replicas cannot take and sheds the rest with a
`BackPressureError` somewhere inside a turn, so overload reached clients as a 503 in the middle
of a stream after seconds of work, and queued turns waited tens of seconds. Here a router
replica counts the turns it runs; one more than its `Capacity` is refused at once (HTTP 503 with
`Retry-After` before any streaming, a WebSocket `error` event with status 503).

A turn holds at most one request in each stage at a time (ASR, then the LLM stream while TTS and
render follow sentence by sentence), so turns in flight <= the narrowest stage's request slots
(replicas x `max_ongoing_requests`) means no stage ever has to queue or shed a turn's call.
Each router replica gets an equal share: the slots divided by the router's most replicas. That
is conservative while fewer router replicas run or a stage has not yet scaled up (Serve then
queues, it does not shed); `limits.max_turns_in_flight` sets the share explicitly.

Framework-free (no Ray): the router wires it in; tests use it directly.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from services.core.config import AppConfig
from services.core.registry import STAGES
from services.core.serve_options import DeploymentOptions
from services.core.telemetry import Telemetry
from services.server.limits import RetryLater


def most_replicas(options: DeploymentOptions) -> int:
    """The most replicas a deployment runs: its fixed count, or its autoscaling maximum."""
    if options.num_replicas is not None:
        return options.num_replicas
    if options.autoscaling_config is not None:
        return options.autoscaling_config.max_replicas
    return 1


def stage_slots(options: DeploymentOptions) -> int:
    """Requests a stage works on at once when scaled out: replicas x max_ongoing_requests."""
    return most_replicas(options) * options.max_ongoing_requests


@dataclass(frozen=True)
class Capacity:
    """Turns one router replica may run at once, and where that number comes from."""

    turns: int
    source: str


def capacity(config: AppConfig) -> Capacity:
    """This app's per-router-replica turn capacity (see the module docstring)."""
    if config.limits.max_turns_in_flight is not None:
        return Capacity(config.limits.max_turns_in_flight, "limits.max_turns_in_flight")
    slots = {name: stage_slots(config.stage(name).serve) for name in STAGES}
    narrowest = min(slots, key=slots.__getitem__)
    routers = most_replicas(config.router.serve)
    turns = max(1, slots[narrowest] // routers)
    return Capacity(turns, f"{narrowest}: {slots[narrowest]} slots / {routers} router replicas")


class Ticket:
    """One admitted turn's slot: `release()` it when the turn ends (idempotent). A ticket that
    is dropped unreleased (a stream never started) gives its slot back when collected."""

    def __init__(self, admission: Admission, token: int) -> None:
        self._finalizer = weakref.finalize(self, admission._release, token)

    def release(self) -> None:
        self._finalizer()

    @property
    def released(self) -> bool:
        return not self._finalizer.alive

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Admission:
    """Counts this router replica's turns in flight against `capacity`.

    A refusal is `RetryLater(503)` whose retry hint is when the oldest running turn should end,
    from the running mean of turn durations (at least 1 s).

    Args:
        capacity: turns at once; one more is refused (None: unbounded, only counted).
        telemetry: counts refusals in `avatar_requests_rejected{reason="turns_in_flight"}`.
        clock: monotonic seconds (tests pass a fake).
    """

    def __init__(
        self,
        capacity: int | None,
        *,
        telemetry: Telemetry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.capacity, self.clock = capacity, clock
        self.telemetry = telemetry or Telemetry()
        self._started: dict[int, float] = {}
        self._next = 0
        self._mean_s: float | None = None
        # A ticket may be collected (and release) on another thread than the event loop.
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        return len(self._started)

    def acquire(self) -> Ticket:
        """A slot for one turn; RetryLater(503) when all are taken."""
        with self._lock:
            if self.capacity is not None and len(self._started) >= self.capacity:
                retry = self._retry_after()
                refused = True
            else:
                self._next += 1
                token, refused = self._next, False
                self._started[token] = self.clock()
        if refused:
            self.telemetry.inc("avatar_requests_rejected", reason="turns_in_flight")
            raise RetryLater(
                503,
                f"the cluster is at capacity ({self.capacity} turns at once on this router "
                "replica); retry shortly",
                retry,
            )
        return Ticket(self, token)

    def _retry_after(self) -> float:
        if self._mean_s is None or not self._started:
            return 1.0
        oldest_age = self.clock() - min(self._started.values())
        return max(1.0, self._mean_s - oldest_age)

    def _release(self, token: int) -> None:
        with self._lock:
            started = self._started.pop(token, None)
            if started is None:
                return
            held = self.clock() - started
            # Running mean over roughly the last 20 turns: the retry hint follows the load.
            self._mean_s = held if self._mean_s is None else 0.95 * self._mean_s + 0.05 * held
