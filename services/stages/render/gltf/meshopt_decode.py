"""Decoding of `EXT_meshopt_compression` bufferViews (gltfpack output such as `facecap.glb`).

A separate module because it is the loader's only use of an optional package: `meshopt` is
imported when a compressed view is first read, so plain glTF files load without it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from services.stages.sdk import import_sdk


def decode_meshopt_view(ext: dict[str, Any], source: bytes, path: str) -> bytes:
    """The decoded bytes of one compressed bufferView.

    Args:
        ext: The view's `EXT_meshopt_compression` (or `KHR_meshopt_compression`) object.
        source: The compressed bytes (`ext.byteLength` bytes at `ext.byteOffset` of its buffer).
        path: The asset's path, for the install hint.
    """
    meshopt = import_sdk(
        "meshopt",
        f"avatar asset {path!r} is meshopt-compressed; pip install meshopt "
        "(or 'avatar-serve[local]') to read it",
    )
    filt = ext.get("filter", "NONE")
    decoded = meshopt.decode_gltf_buffer(
        source, ext["count"], ext["byteStride"], ext["mode"], None if filt == "NONE" else filt
    )
    return np.ascontiguousarray(decoded).tobytes()
