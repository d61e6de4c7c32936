"""Batched rendering: frames of concurrent render streams drawn together on one GL context.

The `FrameBatcher` tests need no GL. The renderer tests create an EGL context (Mesa llvmpipe on
a CPU) and are marked slow, like the other head3d renderer tests.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from services.core.backend import BackendError
from services.core.types import AvatarLook, PhonemeTiming, SpeechChunk
from services.stages.render.head3d.batcher import FrameBatcher

# -- the scheduler, no GL ----------------------------------------------------------------------


def _doubling_batcher(max_batch: int = 8, wait_s: float = 0.0, seen: list | None = None):
    def render(jobs: list[int]) -> list:
        if seen is not None:
            seen.append((threading.current_thread().name, list(jobs)))
        return [ValueError(f"bad {j}") if j < 0 else j * 2 for j in jobs]

    return FrameBatcher(render, max_batch=max_batch, wait_s=wait_s, name="test-gl")


def test_concurrent_submitters_get_their_own_results_in_batches() -> None:
    seen: list = []
    batcher = _doubling_batcher(max_batch=4, wait_s=0.05, seen=seen)
    results: dict[int, list[int]] = {}

    def stream(slot: int) -> None:
        results[slot] = [batcher.submit(slot * 100 + i).result() for i in range(10)]

    threads = [threading.Thread(target=stream, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    for slot in range(4):
        assert results[slot] == [(slot * 100 + i) * 2 for i in range(10)]
    stats = batcher.stats()
    assert stats["batched_frames"] == 40
    assert 1 < stats["largest_batch"] <= 4  # batches formed, never over the cap
    assert {name for name, _ in seen} == {"test-gl"}  # all on the one GL thread


def test_a_bad_job_fails_alone_and_calls_run_on_the_gl_thread() -> None:
    batcher = _doubling_batcher(wait_s=0.05)
    good, bad = batcher.submit(3), batcher.submit(-1)
    assert good.result() == 6
    with pytest.raises(ValueError, match="bad -1"):
        bad.result()
    assert batcher.call(lambda: threading.current_thread().name) == "test-gl"
    batcher.close()


def test_cancelled_frames_are_skipped_and_a_closed_batcher_refuses_work() -> None:
    seen: list = []
    gate = threading.Event()
    batcher = _doubling_batcher(seen=seen)
    blocker = threading.Thread(target=batcher.call, args=(gate.wait,))
    blocker.start()  # hold the GL thread so the next frames queue up
    time.sleep(0.05)
    kept, dropped = batcher.submit(1), batcher.submit(2)
    assert dropped.cancel()
    gate.set()
    assert kept.result() == 2
    blocker.join()
    batcher.close()
    assert all(2 not in jobs for _, jobs in seen)
    with pytest.raises(BackendError, match="closed"):
        batcher.submit(5)


def test_a_failing_batch_fails_its_frames_not_the_thread() -> None:
    calls = []

    def render(jobs: list[int]) -> list[int]:
        calls.append(jobs)
        if len(calls) == 1:
            raise RuntimeError("GL lost")
        return jobs

    batcher = FrameBatcher(render, max_batch=2, wait_s=0.0, name="test-gl")
    with pytest.raises(RuntimeError, match="GL lost"):
        batcher.submit(1).result()
    assert batcher.submit(7).result() == 7
    batcher.close()


# -- the renderer ------------------------------------------------------------------------------


def assert_same_frame(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to float rounding: a frame drawn in another tile of a batch has its window (and
    FXAA's texture) coordinates offset by the tile: a level on some edge pixels, and with MSAA
    a sample's coverage on a rare silhouette pixel (a quarter of the edge's contrast); FXAA may
    turn a lone silhouette pixel over entirely."""
    assert a.shape == b.shape
    diff = np.abs(a.astype(int) - b.astype(int)).max(axis=2)
    assert (diff > 0).mean() < 0.01, f"{int((diff > 0).sum())} pixels differ"
    # FXAA can flip a lone silhouette pixel by a whole edge contrast (82 seen in CI): bound
    # how many pixels differ a lot, not by how much one of them does.
    assert (diff > 2).mean() < 5e-4 and (diff > 64).sum() <= 2, f"max diff {diff.max()}"


SIZE = 128


def _speech(start_s: float, vowel: str) -> SpeechChunk:
    phonemes = tuple(
        PhonemeTiming(p, s, e)
        for p, s, e in (("m", 0.0, 0.1), (vowel, 0.1, 0.4), ("p", 0.4, 0.5), (vowel, 0.5, 0.8))
    )
    return SpeechChunk(
        samples=np.zeros(12800, dtype=np.float32),
        sample_rate=16000,
        text="x",
        index=0,
        phonemes=phonemes,
        start_s=start_s,
    )


# Four sessions that differ in time, speech and look.
SESSIONS = [
    (_speech(0.0, "ɑ"), AvatarLook()),
    (_speech(1.2, "i"), AvatarLook(skin_rgb=(0.9, 0.8, 0.7))),
    (_speech(3.0, "oʊ"), AvatarLook(background_rgb=(0.0, 0.3, 0.0))),
    (_speech(0.4, "æ"), AvatarLook(skin_rgb=(0.5, 0.35, 0.25), background_rgb=(1.0, 1.0, 1.0))),
]


def _renderer(**options):
    pytest.importorskip("meshopt")
    pytest.importorskip("openfacefx")
    pytest.importorskip("moderngl")
    from services.stages.render.head3d import HeadRenderer, HeadRendererOptions

    backend = HeadRenderer(HeadRendererOptions(width=SIZE, height=SIZE, seed=5, **options))
    try:
        backend.load()
    except BackendError as exc:
        if "OpenGL" in str(exc):
            pytest.skip(f"no headless OpenGL here: {exc}")
        raise
    return backend


@pytest.mark.slow
@pytest.mark.parametrize("antialias", ["none", "fxaa", "msaa4"])
def test_concurrent_sessions_get_exactly_their_own_frames(antialias: str) -> None:
    alone = _renderer(antialias=antialias, max_batch=1)
    try:
        expected = [
            [(f.index, f.rgb) for f in alone.render(speech, look=look)] for speech, look in SESSIONS
        ]
    finally:
        alone.close()
    batched = _renderer(antialias=antialias, max_batch=8, batch_wait_ms=20.0, lookahead=3)
    got: list[list] = [[] for _ in SESSIONS]
    start = threading.Barrier(len(SESSIONS))

    def session(slot: int) -> None:
        speech, look = SESSIONS[slot]
        start.wait()
        got[slot] = [(f.index, f.rgb) for f in batched.render(speech, look=look)]

    threads = [threading.Thread(target=session, args=(i,)) for i in range(len(SESSIONS))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = batched.batch_stats()
        health = batched.health()
    finally:
        batched.close()
    assert stats["largest_batch"] > 1  # frames of several sessions were drawn together
    assert stats["batched_frames"] == sum(len(e) for e in expected)
    assert health["largest_batch"] == stats["largest_batch"] and health["capabilities"]["batching"]
    for mine, want in zip(got, expected, strict=True):
        assert [i for i, _ in mine] == [i for i, _ in want]
        for (_, a), (_, b) in zip(mine, want, strict=True):
            assert_same_frame(a, b)
    # The check tells sessions apart: another session's frame is far from "the same".
    with pytest.raises(AssertionError):
        assert_same_frame(got[0][0][1], expected[1][0][1])


@pytest.mark.slow
def test_a_stream_closed_early_leaves_the_renderer_usable() -> None:
    backend = _renderer(lookahead=4)
    try:
        stream = backend.render(*SESSIONS[0][:1])
        first = next(stream)
        stream.close()  # cancels the frames queued ahead
        again = next(iter(backend.render(SESSIONS[0][0])))
        np.testing.assert_array_equal(first.rgb, again.rgb)
    finally:
        backend.close()
    with pytest.raises(BackendError, match="closed"):
        backend.batch_stats()
