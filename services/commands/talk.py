"""One turn from the command line: in process, or against a running cluster.

Shared by `avatar talk` and the benchmarks: it builds the pipeline from config, streams one
turn, writes the MP4 as frames arrive and returns a JSON-able summary.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.commands.turn_output import stream_to_mp4, summarize
from services.core.config import AppConfig, load_app_config
from services.core.types import AudioChunk
from services.turn.pipeline import Pipeline


@dataclass
class TalkRequest:
    """What `avatar talk` was asked to do."""

    text: str | None = None
    audio_path: Path | None = None
    out: Path | None = None
    persona: str | None = None
    backends: dict[str, str] = field(default_factory=dict)
    config_path: Path | None = None
    api_key: str | None = field(default=None, repr=False)  # for --server; never printed


def build_config(request: TalkRequest) -> AppConfig:
    """The app config file (or the defaults) with the backends the command line overrides."""
    return load_app_config(request.config_path).with_backends(request.backends)


def read_input_audio(request: TalkRequest) -> AudioChunk | None:
    if request.audio_path is None:
        return None
    from services.core.audio import load_audio

    return load_audio(request.audio_path)


def persona_turns(request: TalkRequest, config: AppConfig):
    """The persona planner for this turn (None = plain chat), logged like a cluster turn."""
    settings = config.personas
    if not (request.persona or settings.default):
        return None
    from services.persona.personas import Personas
    from services.storage.database import open_storage

    personas = Personas(settings, open_storage(config.storage).transcripts)
    persona_id = personas.resolve(request.persona)
    return personas.turns(persona_id, f"cli-{uuid.uuid4().hex[:12]}")


def talk_in_process(request: TalkRequest, pipeline: Pipeline | None = None) -> dict[str, Any]:
    """Run one turn in this process and return the JSON summary."""
    audio = read_input_audio(request)
    config = build_config(request)
    turns = persona_turns(request, config)
    owned = pipeline is None
    if pipeline is None:
        pipeline = Pipeline.from_config(config)
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
    from services.commands.client import talk_over_http

    return talk_over_http(server, request)
