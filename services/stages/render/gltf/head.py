"""A loaded head (`HeadAsset`) and how a glTF file becomes one (`load_head`).

Every triangle primitive of the scene is flattened into one indexed mesh in scene space, with
per-vertex part codes (skin, eye, teeth, ...) judged from node, mesh and material names, and
the morph targets whose names map onto ARKit blendshapes (`arkit.py`) as delta arrays in the
canonical ARKit order. Morph target names come from `mesh.extras.targetNames`, the de-facto
convention three.js, Blender and gltfpack use.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.core.backend import BackendError
from services.stages.render.gltf.arkit import ARKIT_BLENDSHAPES, canonical_arkit_name
from services.stages.render.gltf.reader import GltfReader

# Part codes stored per vertex; the renderer picks a colour for each.
PART_SKIN, PART_EYE, PART_TEETH, PART_TONGUE, PART_HAIR, PART_CLOTH = 0, 1, 2, 3, 4, 5


def default_asset_path() -> Path:
    """The ARKit head shipped in the installed `openfacefx` package (never copied here: the
    wheel does not state the asset's licence)."""
    spec = importlib.util.find_spec("openfacefx")
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(
            "the default head asset comes from the 'openfacefx' package, which is not installed "
            "(pip install 'avatar-serve[local]'), or pass asset_path to a glTF head"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "studio_web/assets/facecap.glb"


@dataclass(frozen=True, eq=False)
class HeadAsset:
    """A loaded head: every primitive flattened into one indexed triangle mesh in scene space.

    Attributes:
        path: The file it was loaded from.
        positions: (V, 3) float32 rest positions, scene space (glTF: +Y up, face towards +Z).
        normals: (V, 3) float32 unit normals.
        indices: (T * 3,) uint32 triangle list.
        parts: (V,) uint8 part code per vertex (`PART_SKIN`, `PART_EYE`, ...).
        eye_centers: (E, 3) centre of each eyeball primitive, for painting the iris.
        eye_of_vertex: (V,) int16 index into `eye_centers`, -1 for vertices not on an eye.
        target_names: Canonical ARKit names, one per row of the delta arrays.
        position_deltas: (K, V, 3) float32 morph target position offsets.
        normal_deltas: (K, V, 3) float32 morph target normal offsets.
    """

    path: str
    positions: np.ndarray
    normals: np.ndarray
    indices: np.ndarray
    parts: np.ndarray
    eye_centers: np.ndarray
    eye_of_vertex: np.ndarray
    target_names: tuple[str, ...]
    position_deltas: np.ndarray
    normal_deltas: np.ndarray

    @property
    def vertex_count(self) -> int:
        return int(self.positions.shape[0])

    @property
    def triangle_count(self) -> int:
        return int(self.indices.shape[0] // 3)

    @property
    def missing_blendshapes(self) -> tuple[str, ...]:
        """ARKit shapes this head lacks (animating them is a no-op)."""
        return tuple(n for n in ARKIT_BLENDSHAPES if n not in self.target_names)

    def bounds(self, part: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) corners of the rest pose, of one part or of everything."""
        pts = self.positions if part is None else self.positions[self.parts == part]
        if len(pts) == 0:
            pts = self.positions
        return pts.min(axis=0), pts.max(axis=0)


def load_head(path: str | os.PathLike[str] | None = None) -> HeadAsset:
    """Load (or return the cached) head at `path`; None loads openfacefx's `facecap.glb`.

    Raises:
        BackendError: the file is missing, is not glTF 2.0, uses something this loader cannot
            read, or has no morph target with an ARKit name. The message names the file.
    """
    resolved = Path(path).expanduser() if path is not None else default_asset_path()
    try:
        resolved = resolved.resolve(strict=True)
        stat = resolved.stat()
    except OSError as exc:
        raise BackendError(f"avatar asset {str(resolved)!r} cannot be read: {exc}") from exc
    if not resolved.is_file():
        raise BackendError(f"avatar asset {str(resolved)!r} is not a file")
    # The key carries mtime and size so that an operator replacing the file gets the new head.
    return _load_cached(str(resolved), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _load_cached(path: str, _mtime_ns: int, _size: int) -> HeadAsset:
    try:
        return _assemble(GltfReader(path))
    except BackendError:
        raise
    except Exception as exc:  # a malformed file fails anywhere; report it as the file's fault
        raise BackendError(
            f"avatar asset {path!r} is not a readable glTF 2.0 head: {type(exc).__name__}: {exc}"
        ) from exc


# Transparent overlay shells some rigs put over the eyes (Character Creator, MetaHuman-likes);
# drawn opaque they would hide the eyes, so they are left out.
_OVERLAY_WORDS = ("occlusion", "tearline", "tear_line", "cornea", "eyeshadow", "eye_shadow")


def _part_of(names: list[str]) -> int | None:
    """The part a primitive belongs to, judged by its node, mesh and material names; None for
    an overlay that is not drawn."""
    text = " ".join(names).lower()
    if any(w in text for w in _OVERLAY_WORDS):
        return None
    if "teeth" in text or "tooth" in text:
        return PART_TEETH
    if "tongue" in text:
        return PART_TONGUE
    if any(w in text for w in ("lash", "brow", "hair", "beard")):
        return PART_HAIR
    if any(w in text for w in ("outfit", "cloth", "shirt", "jacket", "footwear", "glasses")):
        return PART_CLOTH
    if "eye" in text and not any(w in text for w in ("lid", "socket", "brow")):
        return PART_EYE
    return PART_SKIN


def _assemble(reader: GltfReader) -> HeadAsset:
    """Flatten every drawable triangle primitive of the scene into one `HeadAsset`."""
    meshes = reader.doc.get("meshes", [])
    materials = reader.doc.get("materials", [])
    positions, normals, indices, parts, eye_ids = [], [], [], [], []
    eye_centers: list[np.ndarray] = []
    target_rows: list[dict[str, tuple[np.ndarray, np.ndarray]]] = []
    raw_target_names: set[str] = set()
    base = 0
    for mesh_index, matrix, names in reader.mesh_instances():
        mesh = meshes[mesh_index]
        target_names = list(mesh.get("extras", {}).get("targetNames", []))
        raw_target_names.update(target_names)
        linear = matrix[:3, :3]
        det = np.linalg.det(linear)
        if abs(det) < 1e-30:
            continue  # a zero-scale node draws nothing
        # Inverse-transpose with the scale divided out, so that morph normal deltas keep
        # their size relative to the (unit) rest normals.
        normal_matrix = np.linalg.inv(linear).T * abs(det) ** (1 / 3)
        for prim in mesh.get("primitives", []):
            if prim.get("mode", 4) != 4 or "POSITION" not in prim.get("attributes", {}):
                continue  # points/lines/strips carry no face surface worth drawing
            material = materials[prim["material"]] if "material" in prim else {}
            part = _part_of([*names, mesh.get("name", ""), material.get("name", "")])
            if part is None:
                continue
            attrs = prim["attributes"]
            pos = reader.accessor(attrs["POSITION"]).astype(np.float64)
            world_pos = pos @ linear.T + matrix[:3, 3]
            count = len(pos)
            if "indices" in prim:
                tri = reader.accessor(prim["indices"]).reshape(-1).astype(np.uint32)
            else:
                tri = np.arange(count, dtype=np.uint32)
            tri = tri[: len(tri) - len(tri) % 3]
            if len(tri) and int(tri.max()) >= count:
                raise BackendError(
                    f"avatar asset {reader.path!r}: mesh {mesh_index} indexes vertex "
                    f"{int(tri.max())} of {count}"
                )
            if det < 0:  # a mirroring transform flips the winding
                tri = tri.reshape(-1, 3)[:, ::-1].reshape(-1)
            if "NORMAL" in attrs:
                nrm = reader.accessor(attrs["NORMAL"]).astype(np.float64) @ normal_matrix.T
            else:
                nrm = _vertex_normals(world_pos, tri)
            nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
            rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            for t_index, target in enumerate(prim.get("targets", [])):
                if t_index >= len(target_names):
                    break
                canonical = canonical_arkit_name(target_names[t_index])
                if canonical is None or canonical in rows or "POSITION" not in target:
                    continue
                d_pos = reader.accessor(target["POSITION"]).astype(np.float64) @ linear.T
                d_nrm = (
                    reader.accessor(target["NORMAL"]).astype(np.float64) @ normal_matrix.T
                    if "NORMAL" in target
                    else np.zeros_like(d_pos)
                )
                rows[canonical] = (d_pos.astype(np.float32), d_nrm.astype(np.float32))
            eye_id = -1
            if part == PART_EYE:
                eye_id = len(eye_centers)
                eye_centers.append((world_pos.min(axis=0) + world_pos.max(axis=0)) / 2)
            positions.append(world_pos.astype(np.float32))
            normals.append(nrm.astype(np.float32))
            indices.append(tri + base)
            parts.append(np.full(count, part, dtype=np.uint8))
            eye_ids.append(np.full(count, eye_id, dtype=np.int16))
            target_rows.append(rows)
            base += count
    if not positions:
        raise BackendError(f"avatar asset {reader.path!r} has no triangle meshes")
    names_present = tuple(n for n in ARKIT_BLENDSHAPES if any(n in r for r in target_rows))
    if not names_present:
        sample = ", ".join(sorted(raw_target_names)[:8]) or "none"
        raise BackendError(
            f"avatar asset {reader.path!r} has no ARKit-named blendshapes (morph target names "
            f"in mesh.extras.targetNames, e.g. jawOpen, eyeBlinkLeft; found: {sample})"
        )
    total = base
    position_deltas = np.zeros((len(names_present), total, 3), dtype=np.float32)
    normal_deltas = np.zeros_like(position_deltas)
    start = 0
    for pos, rows in zip(positions, target_rows, strict=True):
        end = start + len(pos)
        for k, name in enumerate(names_present):
            if name in rows:
                position_deltas[k, start:end], normal_deltas[k, start:end] = rows[name]
        start = end
    return HeadAsset(
        path=reader.path,
        positions=np.concatenate(positions),
        normals=np.concatenate(normals),
        indices=np.concatenate(indices).astype(np.uint32),
        parts=np.concatenate(parts),
        eye_centers=np.array(eye_centers, dtype=np.float32).reshape(-1, 3),
        eye_of_vertex=np.concatenate(eye_ids),
        target_names=names_present,
        position_deltas=position_deltas,
        normal_deltas=normal_deltas,
    )


def _vertex_normals(positions: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals for primitives that ship none."""
    tri = indices.reshape(-1, 3)
    a, b, c = positions[tri[:, 0]], positions[tri[:, 1]], positions[tri[:, 2]]
    face = np.cross(b - a, c - a)
    normals = np.zeros_like(positions)
    for corner in range(3):
        np.add.at(normals, tri[:, corner], face)
    return normals
