"""Write a turn to an MP4 file: H.264 video and AAC audio, in sync, with PyAV.

Frames and audio are added as they stream in; frame `n` is shown at `n / fps` and the audio
starts at 0, so audio and video share the turn timeline the stages produce.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from services.core.types import SpeechChunk, VideoFrame
from services.stages.render.jpeg import with_pixels


class Mp4Writer:
    """Streaming MP4 writer.

    Args:
        path: output file.
        fps: video frame rate (frames carry their own index).
        sample_rate: audio rate of the speech chunks.
        crf: x264 quality (lower is better, 18–28 is typical).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        fps: float,
        width: int,
        height: int,
        sample_rate: int,
        crf: int = 23,
    ) -> None:
        self.path = Path(path)
        self.fps = fps
        self.sample_rate = sample_rate
        self._container = av.open(str(self.path), mode="w", format="mp4")
        # Both streams must exist before the first packet is muxed.
        self._video = self._open_video(width, height, crf)
        self._audio = self._container.add_stream("aac", rate=sample_rate, layout="mono")
        self._audio_samples = 0
        self.frames = 0

    def _open_video(self, width: int, height: int, crf: int):
        rate = Fraction(self.fps).limit_denominator()
        stream = self._container.add_stream("libx264", rate=rate)
        # yuv420p needs even sizes; frames are cropped by at most one pixel.
        stream.width, stream.height = width - width % 2, height - height % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        self._time_base = 1 / rate
        return stream

    def add_frame(self, frame: VideoFrame) -> None:
        rgb = with_pixels(frame).rgb[: self._video.height, : self._video.width]
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        video_frame.pts = frame.index
        video_frame.time_base = self._time_base
        for packet in self._video.encode(video_frame):
            self._container.mux(packet)
        self.frames += 1

    def add_speech(self, chunk: SpeechChunk) -> None:
        if chunk.sample_rate != self.sample_rate:
            raise ValueError(
                f"speech at {chunk.sample_rate} Hz, writer opened at {self.sample_rate} Hz"
            )
        # Chunks are laid back to back on the timeline; a gap (if any) becomes silence.
        gap = int(round(chunk.start_s * self.sample_rate)) - self._audio_samples
        if gap > 0:
            self._write_audio(np.zeros(gap, dtype=np.float32))
        self._write_audio(chunk.samples.astype(np.float32))

    def _write_audio(self, samples: np.ndarray) -> None:
        if not len(samples):
            return
        audio_frame = av.AudioFrame.from_ndarray(samples[None, :], format="fltp", layout="mono")
        audio_frame.sample_rate = self.sample_rate
        audio_frame.pts = self._audio_samples
        self._audio_samples += len(samples)
        for packet in self._audio.encode(audio_frame):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._video.encode(None):
            self._container.mux(packet)
        for packet in self._audio.encode(None):
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def probe(path: str | Path) -> dict:
    """Streams, codecs and durations of a media file (used by tests and the CLI's --json)."""
    with av.open(str(path)) as container:
        info: dict = {"streams": []}
        for stream in container.streams:
            duration = (
                float(stream.duration * stream.time_base) if stream.duration is not None else None
            )
            entry = {
                "type": stream.type,
                "codec": stream.codec_context.name,
                "duration_s": duration,
            }
            if stream.type == "video":
                entry.update(width=stream.width, height=stream.height, frames=stream.frames)
                entry["fps"] = float(stream.average_rate) if stream.average_rate else None
            else:
                entry["sample_rate"] = stream.codec_context.sample_rate
            info["streams"].append(entry)
        return info
