"""Unit tests for services.core.audio: decoding, resampling and WAV/PCM encoding."""

from __future__ import annotations

import io
import wave

import av
import numpy as np
import pytest

from services.core.audio import (
    AudioError,
    decode_audio_bytes,
    load_audio,
    pcm16,
    resample,
    wav_bytes,
    write_wav,
)


def _sine(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum) * rate / x.size)


def _encode(samples: np.ndarray, rate: int, fmt: str, codec: str) -> bytes:
    """Encode stereo (L = samples, R = -samples/2) into an in-memory container with PyAV."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo")
        planes = np.stack([samples, -0.5 * samples]).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout="stereo")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def test_wav_round_trip_keeps_rate_and_samples(tmp_path):
    x = _sine(440, 16000)
    path = tmp_path / "a.wav"
    write_wav(path, x, 16000)
    chunk = load_audio(path)
    assert chunk.sample_rate == 16000
    assert chunk.samples.dtype == np.float32
    assert chunk.samples.shape == x.shape
    assert np.max(np.abs(chunk.samples - x)) < 2 / 32767
    assert chunk.duration_s == pytest.approx(1.0)


def test_decode_bytes_matches_file(tmp_path):
    x = _sine(300, 22050, 0.5)
    chunk = decode_audio_bytes(wav_bytes(x, 22050))
    assert chunk.sample_rate == 22050
    assert np.max(np.abs(chunk.samples - x)) < 2 / 32767


@pytest.mark.parametrize(
    ("fmt", "codec", "rate"),
    [("flac", "flac", 44100), ("ogg", "libopus", 48000), ("webm", "libopus", 48000)],
)
def test_decode_compressed_stereo_to_mono(fmt, codec, rate):
    x = _sine(440, rate)
    chunk = decode_audio_bytes(_encode(x, rate, fmt, codec))
    assert chunk.sample_rate == rate
    assert chunk.duration_s == pytest.approx(1.0, abs=0.05)
    # Channels are averaged: (x - x/2) / 2 = x/4.
    assert np.max(np.abs(chunk.samples)) == pytest.approx(0.125, abs=0.02)
    assert _peak_hz(chunk.samples, rate) == pytest.approx(440, abs=3)


def test_load_missing_file_names_path(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="no such file") as info:
        load_audio(path)
    assert str(path) in str(info.value)


def test_load_text_file_is_not_audio(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not audio\n" * 50)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert "audio" in message


def test_load_empty_wav_and_empty_file(tmp_path):
    empty_wav = tmp_path / "empty.wav"
    write_wav(empty_wav, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="empty") as info:
        load_audio(empty_wav)
    assert str(empty_wav) in str(info.value)
    zero_bytes = tmp_path / "zero.wav"
    zero_bytes.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(zero_bytes)


def test_load_directory_is_rejected(tmp_path):
    with pytest.raises(AudioError, match="not a file"):
        load_audio(tmp_path)


@pytest.mark.parametrize("data", [b"", b"garbage" * 100, wav_bytes(np.zeros(0), 16000)])
def test_decode_bad_bytes(data):
    with pytest.raises(AudioError):
        decode_audio_bytes(data)


def test_audio_error_is_value_error():
    assert issubclass(AudioError, ValueError)


@pytest.mark.parametrize(("src", "dst"), [(16000, 44100), (22050, 16000), (48000, 16000)])
def test_resample_round_trip_keeps_frequency(src, dst):
    x = _sine(440, src)
    y = resample(x, src, dst)
    assert y.dtype == np.float32
    assert y.size == round(x.size * dst / src)
    assert _peak_hz(y, dst) == pytest.approx(440, abs=2)
    back = resample(y, dst, src)
    assert back.size == x.size
    assert _peak_hz(back, src) == pytest.approx(440, abs=2)
    # Time-aligned: away from the edges the round trip matches the original closely.
    mid = slice(src // 10, -src // 10)
    assert np.max(np.abs(back[mid] - x[mid])) < 0.02


def test_resample_is_time_aligned():
    x = np.zeros(22050, dtype=np.float32)
    x[11025] = 1.0
    y = resample(x, 22050, 16000)
    assert abs(int(np.argmax(np.abs(y))) - 8000) <= 1


@pytest.mark.parametrize("n", [1, 5, 31, 100])
def test_resample_short_inputs_keep_length(n):
    y = resample(np.ones(n, dtype=np.float32), 44100, 16000)
    assert y.size == round(n * 16000 / 44100)
    assert resample(np.ones(n, dtype=np.float32), 16000, 48000).size == 3 * n


def test_resample_same_rate_and_bad_rate():
    x = _sine(100, 8000, 0.1)
    y = resample(x, 8000, 8000)
    assert np.array_equal(x, y) and y is not x
    with pytest.raises(ValueError):
        resample(x, 0, 16000)


def test_pcm16_clips_and_scales():
    data = pcm16(np.array([0.0, 1.0, -1.0, 2.0, -2.0, 0.5], dtype=np.float32))
    values = np.frombuffer(data, dtype="<i2")
    assert values.tolist() == [0, 32767, -32767, 32767, -32767, 16384]


def test_wav_bytes_header():
    data = wav_bytes(_sine(440, 16000, 0.25), 16000)
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        assert w.getnframes() == 4000
