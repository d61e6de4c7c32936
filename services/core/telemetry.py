"""The app's metrics: one catalogue, recorded through a pluggable sink.

`METRICS` is the single list of metric names, kinds, labels and buckets: the Ray Serve sink
(`deployments/metrics.py`) creates them from it, and the observability tests and dashboards are
checked against it. Labels are bounded (stage, backend, persona, status) — never a session id.
Without a sink (in process, unit tests) recording is a no-op.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

# 10 ms .. 10 s at x1.5-2 per step resolves both a 30 ms render call and a 6 s turn; the tail
# to 60 s keeps overload visible (a p95 past the last bucket would read as 10 s).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0,
                   3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0)  # fmt: skip
RATIO_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
SYNC_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)
FPS_BUCKETS = (5, 10, 15, 20, 25, 30, 40, 60, 90, 120, 200)
RATE_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 200, 500)


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # "counter" | "histogram" | "gauge"
    description: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


STAGE = ("stage", "backend")
METRICS = (
    Metric("avatar_stage_requests", "counter", "Calls into a stage replica", STAGE),
    Metric("avatar_stage_errors", "counter", "Stage calls that raised", STAGE),
    Metric("avatar_stage_latency_seconds", "histogram", "Stage call duration (whole stream)",
           STAGE, LATENCY_BUCKETS),
    Metric("avatar_stage_in_flight", "gauge", "Calls a stage replica is working on", STAGE),
    Metric("avatar_llm_time_to_first_token_seconds", "histogram", "LLM time to first token",
           ("backend",), LATENCY_BUCKETS),
    Metric("avatar_llm_tokens_per_second", "histogram", "LLM decode speed per request",
           ("backend",), RATE_BUCKETS),
    Metric("avatar_llm_tokens", "counter", "Tokens generated", ("backend",)),
    Metric("avatar_asr_rtf", "histogram", "ASR real-time factor (compute / audio seconds)",
           ("backend",), RATIO_BUCKETS),
    Metric("avatar_tts_rtf", "histogram", "TTS real-time factor (compute / audio seconds)",
           ("backend",), RATIO_BUCKETS),
    Metric("avatar_render_fps", "histogram", "Frames rendered per second of render time",
           ("backend",), FPS_BUCKETS),
    Metric("avatar_turn_time_to_first_audio_seconds", "histogram",
           "From the end of the user's input to the first reply audio", ("persona",),
           LATENCY_BUCKETS),
    Metric("avatar_turn_time_to_first_frame_seconds", "histogram",
           "From the end of the user's input to the first video frame", ("persona",),
           LATENCY_BUCKETS),
    Metric("avatar_turn_latency_seconds", "histogram", "Whole turn, input to last frame",
           ("persona",), LATENCY_BUCKETS),
    Metric("avatar_turn_rtf", "histogram", "Turn time / reply audio duration (< 1 is real time)",
           ("persona",), RATIO_BUCKETS),
    Metric("avatar_turn_av_sync_offset_seconds", "histogram",
           "|video end - audio end| of a turn", ("persona",), SYNC_BUCKETS),
    Metric("avatar_turns", "counter", "Turns by outcome: completed, failed, rejected",
           ("persona", "status")),
    Metric("avatar_requests_rejected", "counter", "Requests refused for overload (503)",
           ("reason",)),
    Metric("avatar_sessions_active", "gauge", "Open (unexpired) sessions"),
)  # fmt: skip
BY_NAME = {m.name: m for m in METRICS}


class Sink(Protocol):
    def inc(self, name: str, value: float, tags: dict[str, str]) -> None: ...
    def observe(self, name: str, value: float, tags: dict[str, str]) -> None: ...
    def set(self, name: str, value: float, tags: dict[str, str]) -> None: ...


class Telemetry:
    """Typed recording helpers over a sink; `Telemetry()` records nothing."""

    def __init__(self, sink: Sink | None = None) -> None:
        self.sink = sink

    def _emit(self, method: str, name: str, value: float, **tags: str) -> None:
        if self.sink is not None:
            getattr(self.sink, method)(name, float(value), tags)

    def inc(self, name: str, value: float = 1.0, **tags: str) -> None:
        self._emit("inc", name, value, **tags)

    def observe(self, name: str, value: float, **tags: str) -> None:
        self._emit("observe", name, value, **tags)

    def set(self, name: str, value: float, **tags: str) -> None:
        self._emit("set", name, value, **tags)

    @contextmanager
    def stage_call(self, stage: str, backend: str, in_flight: list[int]) -> Iterator[None]:
        """Count a stage call, its errors, its duration and the calls in flight."""
        tags = {"stage": stage, "backend": backend}
        self.inc("avatar_stage_requests", **tags)
        in_flight[0] += 1
        self.set("avatar_stage_in_flight", in_flight[0], **tags)
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            self.inc("avatar_stage_errors", **tags)
            raise
        finally:
            in_flight[0] -= 1
            self.set("avatar_stage_in_flight", in_flight[0], **tags)
            self.observe("avatar_stage_latency_seconds", time.perf_counter() - start, **tags)

    def turn_completed(self, persona: str, timings: dict[str, float], fps: float) -> None:
        self.inc("avatar_turns", persona=persona, status="completed")
        for metric, key in (
            ("avatar_turn_time_to_first_audio_seconds", "time_to_first_audio_s"),
            ("avatar_turn_time_to_first_frame_seconds", "time_to_first_frame_s"),
            ("avatar_turn_latency_seconds", "total_s"),
            ("avatar_turn_rtf", "rtf"),
        ):
            if timings.get(key):
                self.observe(metric, timings[key], persona=persona)
        frames, audio_s = timings.get("frames", 0.0), timings.get("reply_audio_s", 0.0)
        if frames and audio_s:
            self.observe("avatar_turn_av_sync_offset_seconds", abs(frames / fps - audio_s),
                         persona=persona)  # fmt: skip

    def turn_failed(self, persona: str, rejected: bool) -> None:
        self.inc("avatar_turns", persona=persona, status="rejected" if rejected else "failed")
        if rejected:
            self.inc("avatar_requests_rejected", reason="stage_overload")
