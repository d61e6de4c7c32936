"""JPEG encoding of frames (PyAV's mjpeg codec: no extra dependency).

A 384x384 frame is ~440 KB raw and 3-20 KB as JPEG, and encodes in ~1-2 ms on one core, so
render replicas ship JPEGs and clients decode them. Each thread keeps its encoder per frame
size and quality: opening an mjpeg context costs about as much as encoding a 512x512 frame,
and every packet of an mjpeg stream is a complete JPEG.
"""

from __future__ import annotations

import dataclasses
import threading
from fractions import Fraction

import av
import numpy as np

from services.core.types import VideoFrame

_encoders = threading.local()


def _encoder(width: int, height: int, quality: int) -> av.CodecContext:
    """This thread's mjpeg encoder for the size and quality, opened on first use."""
    cache = _encoders.__dict__.setdefault("contexts", {})
    key = (width, height, quality)
    if key not in cache:
        ctx = av.CodecContext.create("mjpeg", "w")
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = "yuvj420p"
        ctx.time_base = Fraction(1, 25)
        ctx.options = {"qscale": str(quality)}
        cache[key] = ctx
    return cache[key]


def encode_jpeg(rgb: np.ndarray, quality: int = 4) -> bytes:
    """Encode RGB uint8 (H, W, 3); `quality` is mjpeg's qscale, 2 (best) to 31 (worst)."""
    height, width = rgb.shape[:2]
    ctx = _encoder(width - width % 2, height - height % 2, quality)
    frame = av.VideoFrame.from_ndarray(
        np.ascontiguousarray(rgb[: ctx.height, : ctx.width]), format="rgb24"
    )
    # mjpeg has no delay: one packet, one complete JPEG, per frame in.
    return b"".join(bytes(p) for p in ctx.encode(frame.reformat(format="yuvj420p")))


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
