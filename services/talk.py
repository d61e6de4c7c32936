"""One turn from the command line: in process, or against a running cluster.

Shared by `avatar talk` and the benchmarks: it builds the pipeline from config, streams one
turn, writes the MP4 as frames arrive and returns a JSON-able summary.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.config import PipelineConfig, load_pipeline_config
from services.pipeline import Pipeline, TurnResult
from services.types import AudioChunk, SpeechChunk, Transcript, VideoFrame


@dataclass
class TalkRequest:
    """What `avatar talk` was asked to do."""

    text: str | None = None
    audio_path: Path | None = None
    out: Path | None = None
    persona: str | None = None
    backends: dict[str, str] = field(default_factory=dict)
    config_path: Path | None = None


def build_config(request: TalkRequest) -> PipelineConfig:
    config = load_pipeline_config(request.config_path)
    overrides = {
        stage: {"backend": name, "options": {}}
        for stage, name in request.backends.items()
        if name != config.stage(stage).backend
    }
    if overrides:
        data = config.model_dump()
        data.update(overrides)
        config = PipelineConfig(**data)
    return config


def read_input_audio(request: TalkRequest) -> AudioChunk | None:
    if request.audio_path is None:
        return None
    from services.audio import load_audio

    return load_audio(request.audio_path)


def stream_to_mp4(events, fps: float, out: Path | None) -> tuple[TurnResult, dict]:
    """Consume a turn's events, writing the MP4 as they come. Returns the result + details.

    The writer opens at the first frame (its size is the video's); speech that arrives before
    it is held until then.
    """
    from services.media import Mp4Writer

    writer, pending = None, []
    sentences: list[dict[str, Any]] = []
    result = None
    try:
        for event in events:
            if isinstance(event, SpeechChunk):
                sentences.append(
                    {"index": event.index, "text": event.text, "start_s": event.start_s,
                     "duration_s": event.duration_s, "phonemes": len(event.phonemes)}
                )  # fmt: skip
                if writer is None:
                    pending.append(event)
                else:
                    writer.add_speech(event)
            elif isinstance(event, VideoFrame) and out is not None:
                if writer is None:
                    writer = Mp4Writer(
                        out,
                        fps=fps,
                        width=event.width,
                        height=event.height,
                        sample_rate=pending[0].sample_rate,
                    )
                    for speech in pending:
                        writer.add_speech(speech)
                writer.add_frame(event)
            elif isinstance(event, TurnResult):
                result = event
    finally:
        if writer is not None:
            writer.close()
    if result is None:
        raise RuntimeError("the turn ended without a result")
    return result, {"sentences": sentences}


def summarize(result: TurnResult, extra: dict, out: Path | None) -> dict[str, Any]:
    transcript: Transcript = result.transcript
    summary: dict[str, Any] = {
        "transcript": transcript.text,
        "words": [
            {"word": w.word, "start_s": round(w.start_s, 3), "end_s": round(w.end_s, 3)}
            for w in transcript.words
        ],
        "reply": result.reply,
        "reply_audio_s": result.timings.get("reply_audio_s", 0.0),
        "timings": {k: round(v, 4) for k, v in result.timings.items()},
        "metadata": result.metadata,
        **extra,
    }
    if out is not None and out.exists():
        from services.media import probe

        summary["output"] = str(out)
        summary["media"] = probe(out)
    return summary


def persona_turns(request: TalkRequest):
    """The persona planner for this turn (None = plain chat), logged like a cluster turn."""
    from services.config import load_persona_settings

    settings = load_persona_settings(request.config_path)
    if not (request.persona or settings.default):
        return None
    from services.persona.planner import Personas

    personas = Personas(settings)
    persona_id = personas.resolve(request.persona)
    return personas.turns(persona_id, f"cli-{uuid.uuid4().hex[:12]}")


def talk_in_process(request: TalkRequest, pipeline: Pipeline | None = None) -> dict[str, Any]:
    """Run one turn in this process and return the JSON summary."""
    audio = read_input_audio(request)
    turns = persona_turns(request)
    owned = pipeline is None
    if pipeline is None:
        pipeline = Pipeline.from_config(build_config(request))
    try:
        pipeline.load()
        events = pipeline.run_turn(
            audio=audio, text=request.text if audio is None else None, planner=turns
        )
        result, extra = stream_to_mp4(events, pipeline.render.fps, request.out)
    finally:
        if owned:
            # Release native sessions (onnxruntime, llama.cpp, EGL) before interpreter
            # teardown: left to exit, their destructors race and can abort the process.
            pipeline.close()
    if turns is not None:
        turns.finish(result.reply, result.timings)
    return summarize(result, extra, request.out)


def talk_remote(server: str, request: TalkRequest) -> dict[str, Any]:
    """Run one turn against a running cluster (`avatar serve`)."""
    from services.client import talk_over_http

    return talk_over_http(server, request)
