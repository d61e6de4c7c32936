"""Audio helpers shared by every stage: decode, resample, encode.

Decoding goes through PyAV (FFmpeg), so any container/codec FFmpeg knows (WAV, FLAC, OGG/Opus,
MP3, WebM from a browser's MediaRecorder) becomes float32 mono at the file's native rate.
Resampling uses FFmpeg's swresample (windowed-sinc, time-aligned), which keeps this module free
of scipy. Encoding is 16-bit PCM WAV through the standard library.
"""

from __future__ import annotations

import io
import os
import wave
from pathlib import Path
from typing import Any

import av
import numpy as np

from services.core.types import AudioChunk

# swresample buffers up to its filter length and drops the tail of very short inputs even when
# flushed; padding with this many zeros (then trimming) makes every length come back whole.
_RESAMPLE_PAD = 512


class AudioError(ValueError):
    """Audio that cannot be used: missing, not audio, undecodable or empty."""


def _decode(source: Any, name: str) -> AudioChunk:
    """Decode the first audio stream of `source` (a path or a file object) to mono float32."""
    try:
        container = av.open(source, mode="r")
    except FileNotFoundError as exc:
        raise AudioError(f"{name}: no such file") from exc
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise AudioError(f"{name}: not a readable audio file ({_one_line(exc)})") from exc
    with container:
        if not container.streams.audio:
            raise AudioError(f"{name}: not an audio file (no audio stream found)")
        stream = container.streams.audio[0]
        # Normalise whatever sample format the codec produces (s16, s32p, fltp, u8...) to planar
        # float at the native rate and layout; channels are averaged below.
        resampler = av.AudioResampler(format="fltp")
        parts: list[np.ndarray] = []
        rate = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    rate = out.sample_rate
                    parts.append(out.to_ndarray().mean(axis=0, dtype=np.float32))
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().mean(axis=0, dtype=np.float32))
        except (av.FFmpegError, ValueError) as exc:
            raise AudioError(f"{name}: cannot decode audio ({_one_line(exc)})") from exc
    samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    if samples.size == 0 or rate <= 0:
        raise AudioError(f"{name}: empty audio (no samples)")
    samples = np.nan_to_num(samples, copy=False)
    return AudioChunk(samples=np.clip(samples, -1.0, 1.0).astype(np.float32), sample_rate=rate)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def load_audio(path: str | os.PathLike[str]) -> AudioChunk:
    """Decode an audio file to float32 mono at its native sample rate.

    Raises:
        AudioError: the file is missing, is not audio, cannot be decoded, or has no samples. The
            message is one line naming the path.
    """
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if not p.is_file():
        raise AudioError(f"{p}: not a file")
    if p.stat().st_size == 0:
        raise AudioError(f"{p}: empty file")
    return _decode(str(p), str(p))


def decode_audio_bytes(data: bytes) -> AudioChunk:
    """Decode an in-memory audio file (WAV, OGG, MP3, FLAC, WebM...) to float32 mono.

    Raises:
        AudioError: the bytes are empty, not audio, or hold no samples.
    """
    name = f"<{len(data)} bytes>"
    if not data:
        raise AudioError(f"{name}: empty input")
    return _decode(io.BytesIO(data), name)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample mono float audio; the output is time-aligned and `round(n * to / from)` long."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    if from_rate == to_rate or x.size == 0:
        return x.copy()
    expected = int(round(x.size * to_rate / from_rate))
    padded = np.concatenate([x, np.zeros(_RESAMPLE_PAD, dtype=np.float32)])
    frame = av.AudioFrame.from_ndarray(padded[None, :], format="flt", layout="mono")
    frame.sample_rate = int(from_rate)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=int(to_rate))
    outs = resampler.resample(frame) + resampler.resample(None)
    y = np.concatenate([o.to_ndarray().reshape(-1) for o in outs]).astype(np.float32)
    if y.size < expected:
        y = np.concatenate([y, np.zeros(expected - y.size, dtype=np.float32)])
    return y[:expected]


def pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] to little-endian signed 16-bit PCM bytes (clipped)."""
    x = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
    return np.round(x * 32767.0).astype("<i2").tobytes()


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """Mono 16-bit PCM WAV file contents."""
    buf = io.BytesIO()
    _write_wav(buf, samples, rate)
    return buf.getvalue()


def write_wav(path: str | os.PathLike[str], samples: np.ndarray, rate: int) -> None:
    """Write a mono 16-bit PCM WAV file."""
    with open(path, "wb") as fh:
        _write_wav(fh, samples, rate)


def _write_wav(fh: Any, samples: np.ndarray, rate: int) -> None:
    with wave.open(fh, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(pcm16(samples))
