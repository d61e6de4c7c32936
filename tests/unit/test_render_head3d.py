"""The glTF head loader and the moderngl head renderer.

Loader tests are fast. Renderer tests create an EGL context and rasterise frames (Mesa llvmpipe
on a CPU, a few seconds in all) and are marked slow.
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from services.core.backend import BackendError
from services.core.registry import create_backend
from services.core.types import AvatarLook, PhonemeTiming, SpeechChunk
from services.stages.render.gltf import (
    ARKIT_BLENDSHAPES,
    PART_EYE,
    PART_TEETH,
    canonical_arkit_name,
    default_asset_path,
    load_head,
)
from tests.unit.test_render_batching import assert_same_frame

pytest.importorskip("meshopt")
pytest.importorskip("openfacefx")

FPS = 25.0

# "hello ... mama", 2.2 s: a pause in the middle, silence at both ends.
PHONEMES = tuple(
    PhonemeTiming(p, s, e)
    for p, s, e in (
        ("_", 0.0, 0.2),
        ("h", 0.2, 0.26),
        ("ə", 0.26, 0.32),
        ("l", 0.32, 0.38),
        ("ˈ", 0.38, 0.40),
        ("oʊ", 0.40, 0.60),
        ("_", 0.60, 1.00),
        ("m", 1.00, 1.08),
        ("ɑː", 1.08, 1.30),
        ("m", 1.30, 1.40),
        ("ɑ", 1.40, 1.60),
        ("_", 1.60, 2.20),
    )
)


def _speech(start_s: float = 0.0, duration_s: float = 2.2, index: int = 0) -> SpeechChunk:
    rate = 16000
    return SpeechChunk(
        samples=np.zeros(round(duration_s * rate), dtype=np.float32),
        sample_rate=rate,
        text="hello mama",
        index=index,
        phonemes=PHONEMES,
        start_s=start_s,
    )


def _write_gltf(
    path: Path,
    target_names: list[str],
    *,
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0),
    sparse: bool = False,
) -> Path:
    """A tiny two-triangle glTF (data-URI buffer) with one morph target per name, under a
    parent node that carries `translation`; `sparse` stores the targets as sparse accessors
    (only the two lower corners move)."""
    positions = np.array(
        [[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], dtype=np.float32
    )  # a quad facing +Z
    indices = np.array([0, 1, 2, 0, 2, 3], dtype=np.uint16)
    delta = np.array([[0, -0.5, 0], [0, -0.5, 0], [0, 0, 0], [0, 0, 0]], dtype=np.float32)
    blobs = [positions.tobytes(), indices.tobytes() + b"\0\0"]
    if sparse:
        blobs += [np.array([0, 1], dtype=np.uint32).tobytes() + delta[:2].tobytes()]
    else:
        blobs += [delta.tobytes()] * len(target_names)
    offsets = np.cumsum([0] + [len(b) for b in blobs]).tolist()
    views = [
        {"buffer": 0, "byteOffset": offsets[i], "byteLength": len(b)} for i, b in enumerate(blobs)
    ]
    views[1]["byteLength"] = indices.nbytes
    vec3 = {"componentType": 5126, "count": 4, "type": "VEC3"}
    accessors = [
        {"bufferView": 0, **vec3, "min": [-1, -1, 0], "max": [1, 1, 0]},
        {"bufferView": 1, "componentType": 5123, "count": 6, "type": "SCALAR"},
    ]
    if sparse:
        views += [{"buffer": 0, "byteOffset": offsets[2] + 8, "byteLength": 24}]
        views[2]["byteLength"] = 8
        accessors += [
            {
                **vec3,
                "sparse": {
                    "count": 2,
                    "indices": {"bufferView": 2, "componentType": 5125},
                    "values": {"bufferView": 3},
                },
            }
        ] * len(target_names)
    else:
        accessors += [{"bufferView": 2 + i, **vec3} for i in range(len(target_names))]
    doc = {
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [
            {"name": "root", "translation": list(translation), "children": [1]},
            {"name": "head", "mesh": 0},
        ],
        "meshes": [
            {
                "primitives": [
                    {
                        "attributes": {"POSITION": 0},
                        "indices": 1,
                        "targets": [{"POSITION": 2 + i} for i in range(len(target_names))],
                    }
                ],
                "extras": {"targetNames": target_names},
            }
        ],
        "buffers": [
            {
                "byteLength": offsets[-1],
                "uri": "data:application/octet-stream;base64,"
                + base64.b64encode(b"".join(blobs)).decode(),
            }
        ],
        "bufferViews": views,
        "accessors": accessors,
    }
    path.write_text(json.dumps(doc))
    return path


# -- loader ------------------------------------------------------------------------------------


def test_default_asset_has_the_52_arkit_blendshapes() -> None:
    asset = load_head()
    assert len(ARKIT_BLENDSHAPES) == 52
    assert set(asset.target_names) == set(ARKIT_BLENDSHAPES)
    assert asset.missing_blendshapes == ()
    assert asset.position_deltas.shape == (52, asset.vertex_count, 3)
    assert asset.indices.max() < asset.vertex_count
    assert asset.triangle_count > 5000
    assert "openfacefx" in asset.path and asset.path.endswith("facecap.glb")


def test_default_asset_parts_are_placed_like_a_face() -> None:
    asset = load_head()
    assert len(asset.eye_centers) == 2
    eyes_lo, eyes_hi = asset.bounds(PART_EYE)
    teeth_lo, teeth_hi = asset.bounds(PART_TEETH)
    head_lo, head_hi = asset.bounds()
    assert teeth_hi[1] < eyes_lo[1]  # glTF is +Y up: the teeth are below the eyes
    assert eyes_hi[2] > (head_lo[2] + head_hi[2]) / 2  # the face looks towards +Z
    assert asset.eye_centers[:, 0].min() < 0 < asset.eye_centers[:, 0].max()
    # jawOpen moves the chin down.
    jaw = asset.position_deltas[asset.target_names.index("jawOpen")]
    assert jaw[np.argmax(np.linalg.norm(jaw, axis=1)), 1] < 0


def test_loaded_assets_are_cached_by_path() -> None:
    assert load_head() is load_head(default_asset_path())


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("jawOpen", "jawOpen"),
        ("eyeBlink_L", "eyeBlinkLeft"),
        ("eyeBlink_R", "eyeBlinkRight"),
        ("EyeBlinkLeft", "eyeBlinkLeft"),
        ("blendShape1.mouthSmileRight", "mouthSmileRight"),
        ("ARKit_mouthRollUpper", "mouthRollUpper"),
        ("mouth_left", "mouthLeft"),
        ("smile", None),
        ("viseme_aa", None),
    ],
)
def test_canonical_arkit_name(raw: str, canonical: str | None) -> None:
    assert canonical_arkit_name(raw) == canonical


def test_a_custom_gltf_head_loads_with_its_transforms(tmp_path: Path) -> None:
    path = _write_gltf(
        tmp_path / "head.gltf", ["JawOpen", "eyeBlink_L", "custom"], translation=(0, 2, 0)
    )
    asset = load_head(path)
    assert asset.target_names == ("eyeBlinkLeft", "jawOpen")
    assert asset.missing_blendshapes and "mouthFunnel" in asset.missing_blendshapes
    np.testing.assert_allclose(asset.bounds()[0], [-1, 1, 0])  # moved up by the parent node
    np.testing.assert_allclose(asset.normals[:, 2], 1.0, atol=1e-6)  # computed, facing +Z


def test_sparse_morph_targets_load(tmp_path: Path) -> None:
    asset = load_head(_write_gltf(tmp_path / "sparse.gltf", ["jawOpen"], sparse=True))
    np.testing.assert_allclose(
        asset.position_deltas[0], [[0, -0.5, 0], [0, -0.5, 0], [0, 0, 0], [0, 0, 0]]
    )


def test_missing_asset_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.glb"
    with pytest.raises(BackendError, match="nope.glb"):
        load_head(missing)


def test_non_gltf_file_is_a_clear_error(tmp_path: Path) -> None:
    text = tmp_path / "head.glb"
    text.write_text("this is not a model")
    with pytest.raises(BackendError, match=r"head\.glb.*neither a \.glb nor a \.gltf"):
        load_head(text)
    truncated = tmp_path / "cut.glb"
    truncated.write_bytes(default_asset_path().read_bytes()[:5000])
    with pytest.raises(BackendError, match="cut.glb"):
        load_head(truncated)


def test_head_without_arkit_blendshapes_is_a_clear_error(tmp_path: Path) -> None:
    path = _write_gltf(tmp_path / "plain.gltf", ["smile", "frown"])
    with pytest.raises(BackendError, match=r"plain\.gltf.*no ARKit-named blendshapes.*smile"):
        load_head(path)


# -- renderer (no GL needed) -------------------------------------------------------------------


def test_options_are_validated() -> None:
    from services.stages.render.head3d import HeadRendererOptions

    assert HeadRendererOptions().width == 512
    assert HeadRendererOptions().fps == 25
    with pytest.raises(ValidationError):
        HeadRendererOptions(width=10)
    with pytest.raises(ValidationError):
        HeadRendererOptions(fps=5)
    with pytest.raises(ValidationError):
        HeadRendererOptions(colour="red")  # type: ignore[call-arg]


def test_registry_builds_without_loading() -> None:
    backend = create_backend("render", "head3d", {"width": 128, "height": 128})
    assert backend.name == "head3d" and not backend.loaded
    assert backend.fps == 25.0


# -- renderer (GL) -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def renderer():
    pytest.importorskip("moderngl")
    from services.stages.render.head3d import HeadRenderer, HeadRendererOptions

    backend = HeadRenderer(HeadRendererOptions(width=192, height=192, seed=3, head_motion=0.0))
    try:
        backend.load()
    except BackendError as exc:
        if "OpenGL" in str(exc):
            pytest.skip(f"no headless OpenGL here: {exc}")
        raise
    yield backend
    backend.close()


@pytest.mark.slow
def test_frames_cover_the_chunk_span_gap_free(renderer) -> None:
    first = list(renderer.render(_speech(start_s=1.0, duration_s=1.3)))
    second = list(renderer.render(_speech(start_s=2.3, duration_s=0.5, index=1)))
    assert [f.index for f in first] == list(range(25, 58))
    assert [f.index for f in first + second] == list(range(25, 70))
    for frame in first + second:
        assert frame.pts_s == pytest.approx(frame.index / FPS)
        assert frame.rgb.shape == (192, 192, 3) and frame.rgb.dtype == np.uint8


@pytest.mark.slow
def test_mouth_follows_the_phonemes(renderer) -> None:
    frames = list(renderer.render(_speech()))
    assert len(frames) == 55
    jaw = {round(f.pts_s, 2): f.blendshapes["jawOpen"] for f in frames}
    assert jaw[0.48] > 0.4 and jaw[1.2] > 0.5  # vowels
    assert jaw[0.0] < 0.02 and jaw[0.8] < 0.02 and jaw[2.0] < 0.02  # silence, pause


@pytest.mark.slow
def test_idle_keeps_the_mouth_closed_but_blinks(renderer) -> None:
    frames = list(renderer.render_idle(10.0, 18.0))
    assert [f.index for f in frames] == list(range(250, 450))
    assert max(f.blendshapes["jawOpen"] for f in frames) == 0
    assert max(f.blendshapes["eyeBlinkLeft"] for f in frames) > 0.6


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


@pytest.mark.slow
def test_open_mouth_changes_the_mouth_pixels_only(renderer) -> None:
    speech = list(renderer.render(_speech()))
    idle = list(renderer.render_idle(0.0, 2.2))
    open_i = max(range(len(speech)), key=lambda i: speech[i].blendshapes["jawOpen"])
    assert speech[open_i].blendshapes["eyeBlinkLeft"] == idle[open_i].blendshapes["eyeBlinkLeft"]
    diff = np.abs(speech[open_i].rgb.astype(int) - idle[open_i].rgb.astype(int)).sum(axis=2)
    changed = np.argwhere(diff > 30)
    assert len(changed) > 200
    # The change sits in the lower half of the frame, around the middle: the mouth.
    assert changed[:, 0].mean() > 192 * 0.55
    assert abs(changed[:, 1].mean() - 96) < 192 * 0.1
    # A closed-mouth frame of speech equals the idle frame at the same time.
    assert speech[0].blendshapes["jawOpen"] == 0
    np.testing.assert_array_equal(speech[0].rgb, idle[0].rgb)


@pytest.mark.slow
def test_frame_is_an_upright_lit_face(renderer) -> None:
    look = AvatarLook(background_rgb=(0.0, 0.0, 1.0))
    frame = next(iter(renderer.render_idle(0.0, 0.04, look=look)))
    rgb = frame.rgb
    np.testing.assert_array_equal(rgb[0, 0], [0, 0, 255])  # background in the corners
    np.testing.assert_array_equal(rgb[-1, -1], [0, 0, 255])
    face = np.any(rgb != [0, 0, 255], axis=2)
    assert 0.3 < face.mean() < 0.9  # a framed face, not a speck or a wall
    assert _luma(rgb)[face].std() > 10  # shaded, not flat
    # Project the eye centres and the teeth with the renderer's own camera: the pupils (the
    # iris looks at the camera) must be dark where they land, above the mouth.
    from services.stages.render.head3d.gl import asset_key

    head = renderer._scene.heads[asset_key(None)]
    asset = head.asset

    def to_pixel(point: np.ndarray) -> tuple[int, int]:
        clip = head.view_proj @ np.append(point, 1.0)
        x, y = clip[:2] / clip[3]
        return round((1 - y) / 2 * 192), round((x + 1) / 2 * 192)  # row 0 is the top

    eye_rows = []
    for center in asset.eye_centers:
        row, col = to_pixel(center)
        eye_rows.append(row)
        assert _luma(rgb[row - 1 : row + 2, col - 1 : col + 2]).min() < 50
    teeth_row, _ = to_pixel(asset.positions[asset.parts == PART_TEETH].mean(axis=0))
    assert max(eye_rows) < teeth_row
    assert 0.25 * 192 < np.mean(eye_rows) < 0.55 * 192


@pytest.mark.slow
def test_rendering_is_deterministic(renderer) -> None:
    a = list(renderer.render(_speech(start_s=0.4, duration_s=0.8)))
    b = list(renderer.render(_speech(start_s=0.4, duration_s=0.8)))
    assert [f.blendshapes for f in a] == [f.blendshapes for f in b]
    for fa, fb in zip(a, b, strict=True):
        assert_same_frame(fa.rgb, fb.rgb)
    # Another replica with the same options renders the same frames (any replica, any chunk).
    from services.stages.render.head3d import HeadRenderer

    other = HeadRenderer(renderer.options)
    try:
        c = list(other.render(_speech(start_s=0.4, duration_s=0.8)))
    finally:
        other.close()
    for fa, fc in zip(a, c, strict=True):
        assert_same_frame(fa.rgb, fc.rgb)


@pytest.mark.slow
def test_concurrent_streams_match_sequential_ones(renderer) -> None:
    expected = [f.rgb for f in renderer.render(_speech(duration_s=0.6))]
    results: list[list[np.ndarray]] = [[], []]

    def run(slot: int) -> None:
        results[slot] = [f.rgb for f in renderer.render(_speech(duration_s=0.6))]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for frames in results:
        assert len(frames) == len(expected)
        for got, want in zip(frames, expected, strict=True):
            assert_same_frame(got, want)


@pytest.mark.slow
def test_look_changes_skin_and_asset(renderer, tmp_path: Path) -> None:
    base = next(iter(renderer.render_idle(0.0, 0.04)))
    pale = next(iter(renderer.render_idle(0.0, 0.04, look=AvatarLook(skin_rgb=(0.9, 0.9, 0.9)))))
    assert np.abs(base.rgb.astype(int) - pale.rgb.astype(int)).sum(axis=2).mean() > 5
    custom = _write_gltf(tmp_path / "quad.gltf", ["jawOpen"])
    quad = next(iter(renderer.render_idle(0.0, 0.04, look=AvatarLook(asset_path=str(custom)))))
    assert not np.array_equal(quad.rgb, base.rgb)
    with pytest.raises(BackendError, match="missing.glb"):
        next(iter(renderer.render_idle(0.0, 1.0, look=AvatarLook(asset_path="/missing.glb"))))


@pytest.mark.slow
def test_health_reports_the_asset(renderer) -> None:
    info = renderer.health()
    assert info["ok"] and info["loaded"]
    assert info["vertices"] > 1000 and info["missing_blendshapes"] == []
