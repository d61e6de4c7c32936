"""`avatar talk` end to end with the real local models: an MP4 of the avatar answering."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from services.commands.main import main
from services.commands.mp4 import probe
from services.core.config import AppConfig
from services.core.types import SpeechChunk, VideoFrame
from services.turn.pipeline import Pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QUESTION = "Hello! What do you like to do on weekends?"


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


@pytest.fixture(scope="module")
def pipeline():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    config = AppConfig(
        stages={
            "render": {"backend": "head3d", "options": {"width": 256, "height": 256}},
            # No generator noise: the spoken question is the same audio every run, so the
            # exact transcript it asserts is reproducible.
            "tts": {"backend": "piper", "options": {"noise_scale": 0.0, "noise_w": 0.0}},
        }
    )
    pipe = Pipeline.from_config(config)
    pipe.load()
    yield pipe
    pipe.close()


def test_talk_text_writes_a_synced_mp4(tmp_path, capsys):
    out = tmp_path / "reply.mp4"
    assert main(["talk", "--text", QUESTION, "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["reply"].strip()
    video, audio = (
        next(s for s in probe(out)["streams"] if s["type"] == kind) for kind in ("video", "audio")
    )
    assert video["codec"] == "h264" and audio["codec"] == "aac"
    assert video["fps"] >= 25
    assert abs(video["duration_s"] - audio["duration_s"]) <= 1 / video["fps"] + 1e-6
    timings = summary["timings"]
    assert 0 < timings["time_to_first_frame_s"] < timings["total_s"]
    assert timings["reply_audio_s"] == pytest.approx(audio["duration_s"], abs=0.05)


def test_talk_audio_hears_the_question(tmp_path, capsys, pipeline):
    from services.core.audio import write_wav

    speech = pipeline.tts.synthesize(QUESTION)
    wav = tmp_path / "question.wav"
    write_wav(wav, speech.samples, speech.sample_rate)
    out = tmp_path / "reply.mp4"
    assert main(["talk", "--audio", str(wav), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert words(summary["transcript"]) == words(QUESTION)
    assert summary["timings"]["asr_s"] > 0
    assert out.stat().st_size > 10_000


def test_mouth_follows_the_speech_energy(pipeline):
    frames: list[VideoFrame] = []
    speech: list[SpeechChunk] = []
    for event in pipeline.run_turn(text=QUESTION):
        if isinstance(event, VideoFrame):
            frames.append(event)
        elif isinstance(event, SpeechChunk):
            speech.append(event)
    audio = np.concatenate([s.samples for s in speech])
    rate = speech[0].sample_rate
    half = int(rate / pipeline.render.fps / 2)
    energy, jaw = [], []
    for frame in frames:
        centre = int(frame.pts_s * rate)
        window = audio[max(0, centre - half) : centre + half]
        energy.append(float(np.sqrt(np.mean(window**2))) if len(window) else 0.0)
        jaw.append(frame.blendshapes.get("jawOpen", 0.0))
    correlation = np.corrcoef(energy, jaw)[0, 1]
    assert correlation > 0.3, f"jawOpen vs audio energy correlation {correlation:.2f}"

    idle = list(pipeline.render.render_idle(0.0, 2.0))
    assert max(f.blendshapes.get("jawOpen", 0.0) for f in idle) < 0.05
