"""Streaming H.264 encoding of rendered frames (PyAV), for browsers (WebCodecs) and PyAV clients.

`H264Encoder` takes RGB frames one at a time and returns each frame's encoded access unit as
Annex-B bytes (start codes, SPS and PPS in-band before every keyframe), so a decoder can join
at any keyframe with no out-of-band setup. Encoder choice: `h264_nvenc` when PyAV's ffmpeg has
it and a GPU can open it (probed once per process), else `libx264` (bundled in PyAV's wheels),
else whatever encoder ffmpeg names `h264`. Settings are low latency: no B-frames, no lookahead,
one packet out per frame in; quality-targeted rate control under a bitrate cap.

At 512x512 and 25 fps a talking head costs ~0.5 Mbit/s with the defaults (~41 dB PSNR), against
~1.5 Mbit/s for per-frame JPEGs at `jpeg.py`'s quality (~36 dB); see `loadtests/bench_render.py`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from services.core.types import VideoFrame

NVENC, X264 = "h264_nvenc", "libx264"


class H264Options(BaseModel):
    """Settings of an `H264Encoder`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keyframe_interval: int = Field(
        50, ge=1, le=600, description="A keyframe every this many frames (and at the start)."
    )
    max_bitrate_kbps: int = Field(
        1500, ge=50, le=50_000, description="Cap on the bitrate (VBV max rate, 1 s buffer)."
    )
    quality: int = Field(
        26,
        ge=0,
        le=51,
        description="Constant quality under the cap (x264 CRF / NVENC CQ; lower is better). "
        "26 gives ~41 dB PSNR at ~0.5 Mbit/s for a 512x512 25 fps talking head.",
    )
    encoder: str = Field(
        "auto",
        pattern=r"^(auto|h264_nvenc|libx264|h264)$",
        description="auto: h264_nvenc when usable, else libx264; or name one.",
    )
    threads: int = Field(1, ge=1, le=16, description="Encoder threads (libx264).")


@dataclass(frozen=True)
class H264Packet:
    """One encoded frame.

    Attributes:
        data: The access unit in Annex-B form (00 00 00 01 start codes); a keyframe carries
            SPS and PPS before its IDR slice.
        pts: The frame's number in this stream (0, 1, ...): pts / fps is its time in seconds.
        keyframe: Whether a decoder can start here (WebCodecs chunk type "key").
    """

    data: bytes
    pts: int
    keyframe: bool


@functools.cache
def _can_open(name: str) -> bool:
    """Whether encoder `name` exists and opens here (NVENC needs a GPU and its driver)."""
    try:
        ctx = av.CodecContext.create(name, "w")
        ctx.width = ctx.height = 256
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, 25)
        ctx.encode(av.VideoFrame(256, 256, "yuv420p"))
        ctx.encode(None)
    except Exception:  # noqa: BLE001 - any failure means "not usable here"
        return False
    return True


def h264_encoder_name(choice: str = "auto") -> str:
    """The encoder `choice` resolves to here: `auto` tries NVENC, then libx264, then `h264`."""
    candidates = (NVENC, X264, "h264") if choice == "auto" else (choice,)
    for name in candidates:
        if _can_open(name):
            return name
    raise RuntimeError(f"no usable H.264 encoder among {', '.join(candidates)} in PyAV's ffmpeg")


def _codec_options(name: str, opts: H264Options) -> dict[str, str]:
    rate = str(opts.max_bitrate_kbps)
    if name == NVENC:
        return {
            "preset": "p1",
            "tune": "ull",  # ultra-low latency
            "rc": "vbr",
            "cq": str(opts.quality),
            "maxrate": f"{rate}k",
            "bufsize": f"{rate}k",
            "bf": "0",
            "delay": "0",
            "zerolatency": "1",
            "forced-idr": "1",
            "profile": "baseline",
        }
    return {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "profile": "baseline",
        "crf": str(opts.quality),
        "forced-idr": "1",
        "x264-params": (
            f"keyint={opts.keyframe_interval}:min-keyint={opts.keyframe_interval}:scenecut=0"
            f":bframes=0:vbv-maxrate={rate}:vbv-bufsize={rate}"
        ),
    }


class H264Encoder:
    """A streaming H.264 encoder for one session's frames.

    Args:
        width: Frame width (even).
        height: Frame height (even).
        fps: Frame rate (sets the time base and the rate control's frame budget).
        options: Keyframe interval, bitrate cap, quality, encoder choice.

    Not thread-safe: one encoder per stream.
    """

    def __init__(
        self, width: int, height: int, fps: float = 25.0, options: H264Options | None = None
    ) -> None:
        if width % 2 or height % 2 or width < 16 or height < 16:
            raise ValueError(f"H.264 frames must be even-sized and >= 16 px, got {width}x{height}")
        self.options = options or H264Options()
        self.width, self.height = width, height
        self.codec_name = h264_encoder_name(self.options.encoder)
        ctx = av.CodecContext.create(self.codec_name, "w")
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = "yuv420p"
        rate = Fraction(fps).limit_denominator(1000)
        ctx.time_base, ctx.framerate = 1 / rate, rate
        ctx.gop_size = self.options.keyframe_interval
        ctx.max_b_frames = 0
        ctx.thread_count = self.options.threads
        ctx.options = _codec_options(self.codec_name, self.options)
        self._ctx = ctx
        self._next_pts = 0
        self.codec_string: str | None = None

    def encode(self, rgb: np.ndarray, *, keyframe: bool = False) -> list[H264Packet]:
        """Encode one RGB uint8 (H, W, 3) frame; returns the packets it completes (one, with
        these low-latency settings). `keyframe` forces an IDR frame (e.g. for a late joiner)."""
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(
                f"expected a ({self.height}, {self.width}, 3) uint8 frame, got "
                f"{rgb.shape} {rgb.dtype}"
            )
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = self._next_pts
        if keyframe or self._next_pts % self.options.keyframe_interval == 0:
            frame.pict_type = av.video.frame.PictureType.I
        self._next_pts += 1
        return self._packets(self._ctx.encode(frame))

    def flush(self) -> list[H264Packet]:
        """Drain the encoder at the end of the stream (nothing is pending at low latency)."""
        return self._packets(self._ctx.encode(None))

    def _packets(self, packets: list[av.Packet]) -> list[H264Packet]:
        out = [H264Packet(bytes(p), int(p.pts), bool(p.is_keyframe)) for p in packets]
        if self.codec_string is None:
            for packet in out:
                if packet.keyframe:
                    self.codec_string = avc_codec_string(packet.data)
                    break
        return out


def avc_codec_string(annexb: bytes) -> str | None:
    """The RFC 6381 codec string (`avc1.PPCCLL`, what WebCodecs' `VideoDecoder.configure`
    wants) from the first SPS in Annex-B bytes, or None without one."""
    start = 0
    while True:
        start = annexb.find(b"\x00\x00\x01", start)
        if start < 0 or start + 6 >= len(annexb):
            return None
        start += 3
        if annexb[start] & 0x1F == 7:  # sequence parameter set
            profile, constraints, level = annexb[start + 1 : start + 4]
            return f"avc1.{profile:02x}{constraints:02x}{level:02x}"


def encode_h264(
    frames: Iterable[VideoFrame], fps: float, options: H264Options | None = None
) -> Iterator[VideoFrame]:
    """Encode rendered RGB frames as one H.264 stream that starts with a keyframe: what a
    render replica sends for one sentence when the client asked for video. Each frame comes
    out as its access unit (`VideoFrame.h264`), same index and pts; an odd-sized frame loses
    its last row/column (H.264 needs even sizes)."""
    encoder: H264Encoder | None = None
    for frame in frames:
        rgb = frame.rgb
        if rgb is None:
            raise ValueError("encode_h264 needs raw RGB frames")
        height, width = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
        if encoder is None:
            encoder = H264Encoder(width, height, fps, options)
        for packet in encoder.encode(rgb[:height, :width]):
            yield VideoFrame(
                index=frame.index,
                pts_s=frame.pts_s,
                h264=packet.data,
                keyframe=packet.keyframe,
                size=(width, height),
            )
