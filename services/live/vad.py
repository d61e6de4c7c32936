"""Silero VAD on onnxruntime: speech probabilities for a streamed microphone.

The `silero-vad` wheel ships its ONNX models (`silero_vad/data/*.onnx`), so nothing is
downloaded. The package itself imports torch, so it is never imported here: the model file is
found with `importlib.util.find_spec`, which locates the package without running it, and run
with a plain onnxruntime `InferenceSession` (one intra-op thread: a 32 ms window costs ~0.1 ms).

The model takes 512-sample windows at 16 kHz, each prefixed with the last 64 samples of the
previous one (its context), plus a recurrent state of shape (2, 1, 128); both are carried from
window to window by `VADStream`, whatever size the arriving chunks have. Other input rates are
resampled to 16 kHz by a stateful FFmpeg resampler, so chunk boundaries leave no seams.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

VAD_RATE = 16000
WINDOW = 512  # samples per probability at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window the model sees before each new one
SUPPORTED_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
DEFAULT_MODEL = "silero_vad.onnx"


class VADError(ValueError):
    """Unusable VAD input (an unsupported sample rate, odd PCM bytes) or a missing model."""


def silero_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of an ONNX model shipped in the silero-vad wheel, found without importing it."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise VADError("the Silero VAD model is missing: pip install silero-vad")
    for root in spec.submodule_search_locations:
        path = Path(root) / "data" / name
        if path.is_file():
            return path
    raise VADError(f"silero-vad is installed but has no data/{name}")


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit PCM bytes (a WebSocket binary frame) to float32 in [-1, 1)."""
    if len(data) % 2:
        raise VADError(f"PCM16 audio must have an even number of bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


class SileroVAD:
    """The Silero VAD model, loaded once per process and shared by every session's stream.

    Args:
        model_path: an ONNX Silero model; default: `silero_vad.onnx` from the wheel.
        threads: onnxruntime intra-op threads (1: a window is far too small to split).

    `InferenceSession.run` is thread-safe and all per-stream state lives in `VADStream`, so
    one instance serves any number of concurrent sessions.
    """

    def __init__(self, model_path: str | Path | None = None, *, threads: int = 1) -> None:
        import onnxruntime

        path = Path(model_path) if model_path is not None else silero_model_path()
        if not path.is_file():
            raise VADError(f"no Silero VAD model at {path}")
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # the shipped graphs carry unused initialisers: not news
        try:
            self._session = onnxruntime.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types, no common base
            raise VADError(f"cannot load the Silero VAD model {path}: {exc}") from exc
        self.model_path = path
        self._sr = np.array(VAD_RATE, dtype=np.int64)

    def stream(self, sample_rate: int = VAD_RATE) -> VADStream:
        """A new stream (one per session/microphone) of audio at `sample_rate`."""
        return VADStream(self, sample_rate)

    def probabilities(self, samples: np.ndarray, sample_rate: int = VAD_RATE) -> np.ndarray:
        """Speech probability of every whole 32 ms window of a complete clip."""
        return self.stream(sample_rate).feed(samples).probs

    def _run(self, window: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        """One window (CONTEXT + WINDOW samples) through the model: (probability, new state)."""
        out, new_state = self._session.run(
            None, {"input": window[None, :], "state": state, "sr": self._sr}
        )
        return float(out[0, 0]), new_state


@dataclass(frozen=True)
class VADFrames:
    """What one `VADStream.feed` produced: whole windows at 16 kHz.

    `probs[i]` is the speech probability of `audio[i * WINDOW:(i + 1) * WINDOW]`, which starts
    at sample `first_sample + i * WINDOW` of the stream's 16 kHz timeline (0 = stream start).
    """

    probs: np.ndarray
    audio: np.ndarray
    first_sample: int

    @property
    def count(self) -> int:
        return int(self.probs.size)


class VADStream:
    """One microphone's VAD state: resampler, pending samples, context and recurrent state.

    Not thread-safe: feed one stream from one task at a time.
    """

    def __init__(self, model: SileroVAD, sample_rate: int) -> None:
        if sample_rate not in SUPPORTED_RATES:
            raise VADError(
                f"sample_rate {sample_rate} is not supported; use one of "
                f"{', '.join(map(str, SUPPORTED_RATES))}"
            )
        self._model = model
        self.sample_rate = sample_rate
        self._resampler = (
            None
            if sample_rate == VAD_RATE
            else av.AudioResampler(format="flt", layout="mono", rate=VAD_RATE)
        )
        self._lock = threading.Lock()  # guards only against accidental concurrent feeds
        self.reset()

    def reset(self) -> None:
        """Forget all audio: the next sample is sample 0 of a fresh stream."""
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._windows = 0

    @property
    def samples_done(self) -> int:
        """16 kHz samples consumed into whole windows so far."""
        return self._windows * WINDOW

    def feed(self, samples: np.ndarray) -> VADFrames:
        """Add mono float32 samples at the stream's rate (any length); return the windows that
        became whole (possibly none; the remainder waits for the next call)."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("VADStream.feed called concurrently; use one stream per task")
        try:
            x = self._to_16k(np.nan_to_num(x))
            pending = np.concatenate([self._pending, x]) if self._pending.size else x
            n = pending.size // WINDOW
            audio = pending[: n * WINDOW]
            self._pending = pending[n * WINDOW :].copy()
            probs = np.empty(n, dtype=np.float32)
            first = self._windows * WINDOW
            for i in range(n):
                window = np.concatenate([self._context, audio[i * WINDOW : (i + 1) * WINDOW]])
                probs[i], self._state = self._model._run(window, self._state)
                self._context = window[-CONTEXT:]
            self._windows += n
            return VADFrames(probs=probs, audio=audio, first_sample=first)
        finally:
            self._lock.release()

    def _to_16k(self, x: np.ndarray) -> np.ndarray:
        if self._resampler is None or x.size == 0:
            return x
        # One resampler for the whole stream, never flushed: its filter state spans chunk
        # boundaries, so 20 ms frames come out as one continuous signal.
        frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate = self.sample_rate
        outs = self._resampler.resample(frame)
        if not outs:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate([o.to_ndarray().reshape(-1) for o in outs]).astype(np.float32)
