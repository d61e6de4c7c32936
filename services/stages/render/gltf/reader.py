"""The glTF 2.0 container: JSON document, buffers, bufferViews, accessors and node hierarchy.

Only what a talking head needs is read. Textures are not decoded (the renderer colours parts
itself). `KHR_mesh_quantization` attributes are dequantised through the accessor's `normalized`
flag and the node transforms, as the spec says; `EXT_meshopt_compression` views go through
`meshopt_decode`. Skinned meshes are placed at their rest pose.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from services.core.backend import BackendError
from services.stages.render.gltf.meshopt_decode import decode_meshopt_view

_COMPONENT_DTYPES = {
    5120: np.int8,
    5121: np.uint8,
    5122: np.int16,
    5123: np.uint16,
    5125: np.uint32,
    5126: np.float32,
}
_TYPE_SIZES = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}


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


class GltfReader:
    """One glTF 2.0 file, read once: its JSON document and decoded buffers.

    Buffers and views are decoded on first use and kept: several accessors may share one.

    Args:
        path: A `.glb` or `.gltf` file (external buffers are resolved next to it).

    Raises:
        BackendError: the file is not glTF 2.0; the message names the file.
    """

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
                start = meshopt_ext.get("byteOffset", 0)
                source = self._buffer(meshopt_ext["buffer"])
                self._views[index] = decode_meshopt_view(
                    meshopt_ext, source[start : start + meshopt_ext["byteLength"]], self.path
                )
            else:
                start = spec.get("byteOffset", 0)
                data = self._buffer(spec["buffer"])[start : start + spec["byteLength"]]
                if len(data) < spec["byteLength"]:
                    raise BackendError(
                        f"avatar asset {self.path!r}: bufferView {index} runs past its buffer"
                    )
                self._views[index] = data
        return self._views[index]

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

    def mesh_instances(self) -> list[tuple[int, np.ndarray, list[str]]]:
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
