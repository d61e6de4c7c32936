"""Load a glTF 2.0 head with ARKit-named morph targets into flat numpy arrays for rendering.

Only what a talking head needs is read: triangle primitives, positions, normals, morph target
position/normal deltas, the node hierarchy (TRS or matrix, plus the rest pose of skinned meshes)
and names that say which part is an eye, teeth or tongue. Textures are not decoded; the renderer
colours parts itself. `EXT_meshopt_compression` buffers (gltfpack output such as openfacefx's
`facecap.glb`) are decoded with the `meshopt` package, and `KHR_mesh_quantization` attributes are
dequantised through the accessor's `normalized` flag and the node transforms, as the spec says.

Morph target names come from `mesh.extras.targetNames` (the de-facto convention three.js,
Blender and gltfpack use) and are mapped onto the 52 canonical ARKit names, tolerating the usual
rig spellings (`eyeBlink_L`, `EyeBlinkLeft`, `blendShape1.eyeBlinkLeft`).
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from services.backend import BackendError

ARKIT_BLENDSHAPES: tuple[str, ...] = (
    "browDownLeft",
    "browDownRight",
    "browInnerUp",
    "browOuterUpLeft",
    "browOuterUpRight",
    "cheekPuff",
    "cheekSquintLeft",
    "cheekSquintRight",
    "eyeBlinkLeft",
    "eyeBlinkRight",
    "eyeLookDownLeft",
    "eyeLookDownRight",
    "eyeLookInLeft",
    "eyeLookInRight",
    "eyeLookOutLeft",
    "eyeLookOutRight",
    "eyeLookUpLeft",
    "eyeLookUpRight",
    "eyeSquintLeft",
    "eyeSquintRight",
    "eyeWideLeft",
    "eyeWideRight",
    "jawForward",
    "jawLeft",
    "jawOpen",
    "jawRight",
    "mouthClose",
    "mouthDimpleLeft",
    "mouthDimpleRight",
    "mouthFrownLeft",
    "mouthFrownRight",
    "mouthFunnel",
    "mouthLeft",
    "mouthLowerDownLeft",
    "mouthLowerDownRight",
    "mouthPressLeft",
    "mouthPressRight",
    "mouthPucker",
    "mouthRight",
    "mouthRollLower",
    "mouthRollUpper",
    "mouthShrugLower",
    "mouthShrugUpper",
    "mouthSmileLeft",
    "mouthSmileRight",
    "mouthStretchLeft",
    "mouthStretchRight",
    "mouthUpperUpLeft",
    "mouthUpperUpRight",
    "noseSneerLeft",
    "noseSneerRight",
    "tongueOut",
)

# Part codes stored per vertex; the renderer picks a colour for each.
PART_SKIN, PART_EYE, PART_TEETH, PART_TONGUE, PART_HAIR, PART_CLOTH = 0, 1, 2, 3, 4, 5

_COMPONENT_DTYPES = {
    5120: np.int8,
    5121: np.uint8,
    5122: np.int16,
    5123: np.uint16,
    5125: np.uint32,
    5126: np.float32,
}
_TYPE_SIZES = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
# Lower-case key without separators -> canonical name; the lookup key of `canonical_arkit_name`.
_ARKIT_KEYS = {name.lower(): name for name in ARKIT_BLENDSHAPES}
_ARKIT_KEYS_LONGEST_FIRST = sorted(_ARKIT_KEYS, key=len, reverse=True)
_SIDE_SUFFIX = re.compile(r"(?:[_\-. ]([LRlr])|([LR]))$")


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


def canonical_arkit_name(raw: str) -> str | None:
    """Map a rig's morph target name onto the canonical ARKit name, or None if it is not one.

    Accepts `eyeBlinkLeft`, `EyeBlinkLeft`, `eyeBlink_L`, `eyeBlinkL`, `eye_blink_left` and
    prefixed forms such as `blendShape1.eyeBlinkLeft` or `ARKit_jawOpen`.
    """
    name = raw.strip()
    match = _SIDE_SUFFIX.search(name)
    if match:
        side = (match.group(1) or match.group(2)).upper()
        name = name[: match.start()] + ("Left" if side == "L" else "Right")
    key = re.sub(r"[^0-9a-z]", "", name.lower())
    if key in _ARKIT_KEYS:
        return _ARKIT_KEYS[key]
    # Exporters prefix the shape name with a mesh or set name; the longest suffix wins so that
    # "...mouthLeft" never resolves to a shorter key.
    for candidate in _ARKIT_KEYS_LONGEST_FIRST:
        if key.endswith(candidate):
            return _ARKIT_KEYS[candidate]
    return None


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
        return _GltfReader(path).head()
    except BackendError:
        raise
    except Exception as exc:  # a malformed file fails anywhere; report it as the file's fault
        raise BackendError(
            f"avatar asset {path!r} is not a readable glTF 2.0 head: {type(exc).__name__}: {exc}"
        ) from exc


def _quat_matrix(q: list[float]) -> np.ndarray:
    x, y, z, w = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _local_matrix(node: dict[str, Any]) -> np.ndarray:
    if "matrix" in node:
        return np.array(node["matrix"], dtype=np.float64).reshape(4, 4).T  # column-major
    m = np.eye(4)
    m[:3, :3] = _quat_matrix(node.get("rotation", [0, 0, 0, 1])) * np.array(
        node.get("scale", [1, 1, 1])
    )
    m[:3, 3] = node.get("translation", [0, 0, 0])
    return m


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


class _GltfReader:
    """One pass over one file; `head()` assembles the flattened `HeadAsset`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.doc, self.bin_chunk = self._read_container(Path(path))
        if str(self.doc.get("asset", {}).get("version", "")).split(".")[0] != "2":
            raise BackendError(f"avatar asset {path!r} is not glTF 2.0 (asset.version missing)")
        self._buffers: dict[int, bytes] = {}
        self._views: dict[int, bytes] = {}

    def _read_container(self, path: Path) -> tuple[dict[str, Any], bytes | None]:
        data = path.read_bytes()
        if data[:4] == b"glTF":
            if len(data) < 20:
                raise BackendError(f"avatar asset {self.path!r} is a truncated GLB file")
            _magic, version, length = struct.unpack_from("<4sII", data, 0)
            if version != 2:
                raise BackendError(f"avatar asset {self.path!r} is GLB version {version}, not 2")
            doc, binary, offset = None, None, 12
            while offset + 8 <= min(length, len(data)):
                chunk_len, chunk_type = struct.unpack_from("<I4s", data, offset)
                chunk = data[offset + 8 : offset + 8 + chunk_len]
                if chunk_type == b"JSON":
                    doc = json.loads(chunk.decode("utf-8"))
                elif chunk_type == b"BIN\x00" and binary is None:
                    binary = chunk
                offset += 8 + chunk_len + (-chunk_len % 4)
            if doc is None:
                raise BackendError(f"avatar asset {self.path!r} is a GLB file without JSON chunk")
            return doc, binary
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BackendError(
                f"avatar asset {self.path!r} is neither a .glb nor a .gltf (JSON) file"
            ) from exc
        if not isinstance(doc, dict) or "asset" not in doc:
            raise BackendError(f"avatar asset {self.path!r} is JSON but not a glTF document")
        return doc, None

    # -- buffers -------------------------------------------------------------------------------

    def _buffer(self, index: int) -> bytes:
        if index not in self._buffers:
            spec = self.doc["buffers"][index]
            uri = spec.get("uri")
            if uri is None:
                # The GLB BIN chunk, or a meshopt "fallback" buffer that is never read directly.
                data = self.bin_chunk if index == 0 and self.bin_chunk is not None else b""
            elif uri.startswith("data:"):
                data = base64.b64decode(uri.split(",", 1)[1])
            else:
                data = (Path(self.path).parent / unquote(uri)).read_bytes()
            self._buffers[index] = data
        return self._buffers[index]

    def _view(self, index: int) -> bytes:
        if index not in self._views:
            spec = self.doc["bufferViews"][index]
            ext = spec.get("extensions", {})
            meshopt_ext = ext.get("EXT_meshopt_compression") or ext.get("KHR_meshopt_compression")
            if meshopt_ext is not None:
                self._views[index] = self._meshopt_view(meshopt_ext)
            else:
                start = spec.get("byteOffset", 0)
                data = self._buffer(spec["buffer"])[start : start + spec["byteLength"]]
                if len(data) < spec["byteLength"]:
                    raise BackendError(
                        f"avatar asset {self.path!r}: bufferView {index} runs past its buffer"
                    )
                self._views[index] = data
        return self._views[index]

    def _meshopt_view(self, ext: dict[str, Any]) -> bytes:
        try:
            import meshopt
        except ImportError as exc:
            raise BackendError(
                f"avatar asset {self.path!r} is meshopt-compressed; pip install meshopt "
                "(or 'avatar-serve[local]') to read it"
            ) from exc
        start = ext.get("byteOffset", 0)
        source = self._buffer(ext["buffer"])[start : start + ext["byteLength"]]
        filt = ext.get("filter", "NONE")
        decoded = meshopt.decode_gltf_buffer(
            source, ext["count"], ext["byteStride"], ext["mode"], None if filt == "NONE" else filt
        )
        return np.ascontiguousarray(decoded).tobytes()

    def accessor(self, index: int) -> np.ndarray:
        """An accessor as a (count, components) array, float32 unless it holds indices."""
        spec = self.doc["accessors"][index]
        dtype = np.dtype(_COMPONENT_DTYPES[spec["componentType"]])
        ncomp = _TYPE_SIZES[spec["type"]]
        count = spec["count"]
        if "bufferView" in spec:
            view_spec = self.doc["bufferViews"][spec["bufferView"]]
            view = self._view(spec["bufferView"])
            stride = view_spec.get("byteStride") or dtype.itemsize * ncomp
            offset = spec.get("byteOffset", 0)
            needed = offset + stride * (count - 1) + dtype.itemsize * ncomp if count else 0
            if needed > len(view):
                raise BackendError(
                    f"avatar asset {self.path!r}: accessor {index} runs past its bufferView"
                )
            raw = np.ndarray(
                (count, ncomp),
                dtype=dtype,
                buffer=view,
                offset=offset,
                strides=(stride, dtype.itemsize),
            ).copy()
        else:
            raw = np.zeros((count, ncomp), dtype=dtype)
        sparse = spec.get("sparse")
        if sparse:
            idx_spec, val_spec = sparse["indices"], sparse["values"]
            idx_dtype = np.dtype(_COMPONENT_DTYPES[idx_spec["componentType"]])
            idx = np.frombuffer(
                self._view(idx_spec["bufferView"]),
                dtype=idx_dtype,
                count=sparse["count"],
                offset=idx_spec.get("byteOffset", 0),
            )
            vals = np.frombuffer(
                self._view(val_spec["bufferView"]),
                dtype=dtype,
                count=sparse["count"] * ncomp,
                offset=val_spec.get("byteOffset", 0),
            ).reshape(-1, ncomp)
            raw[idx.astype(np.int64)] = vals
        if dtype.kind == "f":
            return raw.astype(np.float32, copy=False)
        if spec.get("normalized"):
            info = np.iinfo(dtype)
            return np.maximum(raw.astype(np.float32) / info.max, -1.0)
        return raw

    # -- scene ---------------------------------------------------------------------------------

    def _mesh_instances(self) -> list[tuple[int, np.ndarray, list[str]]]:
        """(mesh index, world matrix, names along the path) for every mesh in the scene."""
        nodes = self.doc.get("nodes", [])
        scenes = self.doc.get("scenes") or []
        if scenes:
            roots = scenes[self.doc.get("scene", 0)].get("nodes", [])
        else:  # no scene: every node that is nobody's child is a root
            children = {c for n in nodes for c in n.get("children", [])}
            roots = [i for i in range(len(nodes)) if i not in children]
        world: dict[int, np.ndarray] = {}
        found: list[tuple[int, int, list[str]]] = []
        stack = [(r, np.eye(4), []) for r in roots]
        while stack:
            index, parent, names = stack.pop()
            if index in world:
                continue  # a malformed file with a cycle or shared child
            node = nodes[index]
            matrix = parent @ _local_matrix(node)
            world[index] = matrix
            names = [*names, node.get("name", "")]
            if "mesh" in node:
                found.append((index, node["mesh"], names))
            stack.extend((c, matrix, names) for c in node.get("children", []))
        instances = []
        for node_index, mesh_index, names in found:
            matrix = world[node_index]
            skin_index = nodes[node_index].get("skin")
            if skin_index is not None:
                matrix = self._skin_rest_matrix(skin_index, world, matrix)
            instances.append((mesh_index, matrix, names))
        return instances

    def _skin_rest_matrix(
        self, skin_index: int, world: dict[int, np.ndarray], fallback: np.ndarray
    ) -> np.ndarray:
        # A skinned mesh ignores its node transform; at the rest pose every joint's
        # world @ inverseBind is the same bind-shape matrix, so the first joint gives it.
        skin = self.doc["skins"][skin_index]
        joints = skin.get("joints", [])
        if not joints or joints[0] not in world:
            return fallback
        inverse_bind = np.eye(4)
        if "inverseBindMatrices" in skin:
            inverse_bind = self.accessor(skin["inverseBindMatrices"])[0].reshape(4, 4).T
        return world[joints[0]] @ inverse_bind

    def head(self) -> HeadAsset:
        meshes = self.doc.get("meshes", [])
        materials = self.doc.get("materials", [])
        positions, normals, indices, parts, eye_ids = [], [], [], [], []
        eye_centers: list[np.ndarray] = []
        target_rows: list[dict[str, tuple[np.ndarray, np.ndarray]]] = []
        raw_target_names: set[str] = set()
        base = 0
        for mesh_index, matrix, names in self._mesh_instances():
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
                pos = self.accessor(attrs["POSITION"]).astype(np.float64)
                world_pos = pos @ linear.T + matrix[:3, 3]
                count = len(pos)
                if "indices" in prim:
                    tri = self.accessor(prim["indices"]).reshape(-1).astype(np.uint32)
                else:
                    tri = np.arange(count, dtype=np.uint32)
                tri = tri[: len(tri) - len(tri) % 3]
                if len(tri) and int(tri.max()) >= count:
                    raise BackendError(
                        f"avatar asset {self.path!r}: mesh {mesh_index} indexes vertex "
                        f"{int(tri.max())} of {count}"
                    )
                if det < 0:  # a mirroring transform flips the winding
                    tri = tri.reshape(-1, 3)[:, ::-1].reshape(-1)
                if "NORMAL" in attrs:
                    nrm = self.accessor(attrs["NORMAL"]).astype(np.float64) @ normal_matrix.T
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
                    d_pos = self.accessor(target["POSITION"]).astype(np.float64) @ linear.T
                    d_nrm = (
                        self.accessor(target["NORMAL"]).astype(np.float64) @ normal_matrix.T
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
            raise BackendError(f"avatar asset {self.path!r} has no triangle meshes")
        names_present = tuple(n for n in ARKIT_BLENDSHAPES if any(n in r for r in target_rows))
        if not names_present:
            sample = ", ".join(sorted(raw_target_names)[:8]) or "none"
            raise BackendError(
                f"avatar asset {self.path!r} has no ARKit-named blendshapes (morph target names "
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
            path=self.path,
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
