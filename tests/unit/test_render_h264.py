"""The streaming H.264 encoder: Annex-B packets a stock decoder (PyAV's) plays back."""

from __future__ import annotations

import av
import numpy as np
import pytest
from pydantic import ValidationError

from services.stages.render.h264 import (
    H264Encoder,
    H264Options,
    avc_codec_string,
    h264_encoder_name,
)

W, H = 128, 96


def _frames(count: int) -> list[np.ndarray]:
    """A moving gradient with a bright square: smooth areas and edges, like a face."""
    y, x = np.mgrid[0:H, 0:W]
    out = []
    for i in range(count):
        rgb = np.stack([(x * 2 + i * 3) % 256, (y * 2) % 256, np.full_like(x, 90)], axis=2)
        rgb[20:50, 10 + i : 40 + i] = 230
        out.append(rgb.astype(np.uint8))
    return out


def _decode(packets) -> list[np.ndarray]:
    decoder = av.CodecContext.create("h264", "r")
    frames = [f for p in packets for f in decoder.decode(av.Packet(p.data))]
    frames += decoder.decode(None)
    return [f.to_ndarray(format="rgb24") for f in frames]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def test_frames_round_trip_with_keyframes_first_and_every_interval() -> None:
    source = _frames(30)
    encoder = H264Encoder(W, H, fps=25.0, options=H264Options(keyframe_interval=12))
    assert encoder.codec_name == h264_encoder_name()
    packets = []
    for rgb in source:
        got = encoder.encode(rgb)
        assert len(got) == 1  # low latency: every frame comes out at once
        packets += got
    packets += encoder.flush()
    assert [p.pts for p in packets] == list(range(30))
    assert [i for i, p in enumerate(packets) if p.keyframe] == [0, 12, 24]
    first = packets[0].data
    assert first.startswith(b"\x00\x00\x00\x01") or first.startswith(b"\x00\x00\x01")
    assert encoder.codec_string is not None and encoder.codec_string.startswith("avc1.42")
    decoded = _decode(packets)
    assert len(decoded) == 30
    assert all(d.shape == (H, W, 3) for d in decoded)
    assert min(_psnr(d, s) for d, s in zip(decoded, source, strict=True)) > 28


def test_a_decoder_can_join_at_a_later_keyframe() -> None:
    encoder = H264Encoder(W, H, options=H264Options(keyframe_interval=100))
    source = _frames(10)
    packets = [p for i, rgb in enumerate(source) for p in encoder.encode(rgb, keyframe=i == 6)]
    assert [i for i, p in enumerate(packets) if p.keyframe] == [0, 6]
    late = _decode(packets[6:])  # SPS/PPS travel in-band with the keyframe
    assert len(late) == 4 and _psnr(late[0], source[6]) > 28


def test_bitrate_cap_holds_on_noise() -> None:
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(50)]
    encoder = H264Encoder(W, H, fps=25.0, options=H264Options(max_bitrate_kbps=300))
    size = sum(len(p.data) for rgb in noise for p in encoder.encode(rgb))
    assert size * 8 / 2.0 < 300_000 * 1.5  # 2 s of video; VBV allows some slack at the start


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="even-sized"):
        H264Encoder(127, 96)
    encoder = H264Encoder(W, H)
    with pytest.raises(ValueError, match=r"\(96, 128, 3\) uint8"):
        encoder.encode(np.zeros((H, W, 4), dtype=np.uint8))
    with pytest.raises(ValidationError):
        H264Options(encoder="vp9")
    with pytest.raises(ValidationError):
        H264Options(max_bitrate_kbps=0)


def test_codec_string_comes_from_the_sps() -> None:
    sps = b"\x00\x00\x00\x01\x67\x64\x00\x1f\xac"  # High profile, level 3.1
    assert avc_codec_string(b"\x00\x00\x00\x01\x09\xf0" + sps) == "avc1.64001f"
    assert avc_codec_string(b"\x00\x00\x01\x65\x88") is None


@pytest.mark.gpu
def test_nvenc_round_trips_when_a_gpu_can_open_it() -> None:
    try:
        h264_encoder_name("h264_nvenc")
    except RuntimeError:
        pytest.skip("h264_nvenc does not open here (no NVIDIA GPU/driver)")
    encoder = H264Encoder(W, H, options=H264Options(encoder="h264_nvenc", keyframe_interval=10))
    source = _frames(20)
    packets = [p for rgb in source for p in encoder.encode(rgb)] + encoder.flush()
    assert packets[0].keyframe and len(packets) == 20
    decoded = _decode(packets)
    assert len(decoded) == 20
    assert min(_psnr(d, s) for d, s in zip(decoded, source, strict=True)) > 28
