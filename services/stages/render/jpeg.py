"""JPEG encoding of frames (PyAV's mjpeg codec: no extra dependency).

A 384x384 frame is ~440 KB raw and 3-20 KB as JPEG, and encodes in ~2 ms on one core, so
render replicas ship JPEGs and clients decode them.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import av
import numpy as np

from services.core.types import VideoFrame


def encode_jpeg(rgb: np.ndarray, quality: int = 4) -> bytes:
    """Encode RGB uint8 (H, W, 3); `quality` is mjpeg's qscale, 2 (best) to 31 (worst)."""
    height, width = rgb.shape[:2]
    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height = width - width % 2, height - height % 2
    ctx.pix_fmt = "yuvj420p"
    ctx.time_base = Fraction(1, 25)
    ctx.options = {"qscale": str(quality)}
    frame = av.VideoFrame.from_ndarray(
        np.ascontiguousarray(rgb[: ctx.height, : ctx.width]), format="rgb24"
    )
    packets = ctx.encode(frame.reformat(format="yuvj420p")) + ctx.encode(None)
    return b"".join(bytes(p) for p in packets)


def decode_jpeg(data: bytes) -> np.ndarray:
    """Decode a JPEG to RGB uint8 (H, W, 3)."""
    ctx = av.CodecContext.create("mjpeg", "r")
    frames = ctx.decode(av.Packet(data))
    if not frames:
        raise ValueError("not a decodable JPEG frame")
    return frames[0].to_ndarray(format="rgb24")


def to_jpeg(frame: VideoFrame, quality: int = 4) -> VideoFrame:
    """The same frame with its pixels JPEG-encoded and the raw array dropped."""
    if frame.rgb is None:
        return frame
    return dataclasses.replace(
        frame, rgb=None, jpeg=encode_jpeg(frame.rgb, quality), size=(frame.width, frame.height)
    )


def with_pixels(frame: VideoFrame) -> VideoFrame:
    """The same frame with raw RGB pixels (decoding the JPEG if needed)."""
    if frame.rgb is not None:
        return frame
    if frame.jpeg is None:
        raise ValueError(f"frame {frame.index} has neither pixels nor a JPEG")
    return dataclasses.replace(frame, rgb=decode_jpeg(frame.jpeg))
