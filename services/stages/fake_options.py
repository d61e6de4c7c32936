"""What the four fake backends share: their fault-injection options and the injector itself.

The fakes stand in for real models in tests and load tests of the serving layer. Each one draws,
per call, whether that call fails (from a generator seeded with `seed`, so a run is
reproducible), pays the call's configured delay, and then raises or answers. The option names
and defaults here are part of the config surface (e.g. `loadtests/configs/fake.yaml`).
"""

from __future__ import annotations

import random
import threading
import time

from pydantic import Field

from services.core.backend import BackendError, BackendOptions


class FakeOptions(BackendOptions):
    """Failure knobs every fake backend has."""

    failure_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="Probability that a call raises BackendError."
    )
    seed: int = Field(0, description="Seed of the failure draws (reproducible runs).")


class FakeLatencyOptions(FakeOptions):
    """Failure knobs plus a fixed delay per call (the LLM fake has `ttft_s` instead)."""

    latency_s: float = Field(
        0.0, ge=0.0, le=60.0, description="Fixed delay per call, before its first output."
    )


class FaultInjector:
    """Seeded failure draws and delays for one fake backend instance.

    Args:
        options: The fake's options (`failure_rate` and `seed` are read).
        message: The `BackendError` message of an injected failure.
    """

    def __init__(self, options: FakeOptions, message: str) -> None:
        self._failure_rate = options.failure_rate
        self._message = message
        self._rng = random.Random(options.seed)
        self._lock = threading.Lock()

    def call(self, delay_s: float) -> None:
        """Draw whether this call fails, sleep `delay_s`, then raise if it failed.

        The draw comes first, under a lock, so the sequence of outcomes follows call order
        whatever the delays: the same seed gives the same failures.
        """
        with self._lock:
            fail = self._rng.random() < self._failure_rate
        if delay_s > 0:
            time.sleep(delay_s)
        if fail:
            raise BackendError(self._message)
