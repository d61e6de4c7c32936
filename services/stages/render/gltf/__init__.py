"""glTF 2.0 heads with ARKit-named morph targets, loaded into flat numpy arrays for rendering.

- `reader`: the glTF container (GLB or JSON), buffers, accessors and node hierarchy.
- `meshopt_decode`: `EXT_meshopt_compression` views (the optional `meshopt` package).
- `arkit`: the 52 ARKit blendshape names and the mapping of rig spellings onto them.
- `head`: `HeadAsset` and `load_head`, which flattens a file's meshes into one head.

The names below are the package's API (the `head3d` renderer and the tests use them).
"""

from services.stages.render.gltf.arkit import ARKIT_BLENDSHAPES, canonical_arkit_name
from services.stages.render.gltf.head import (
    PART_CLOTH,
    PART_EYE,
    PART_HAIR,
    PART_SKIN,
    PART_TEETH,
    PART_TONGUE,
    HeadAsset,
    default_asset_path,
    load_head,
)

__all__ = [
    "ARKIT_BLENDSHAPES",
    "PART_CLOTH",
    "PART_EYE",
    "PART_HAIR",
    "PART_SKIN",
    "PART_TEETH",
    "PART_TONGUE",
    "HeadAsset",
    "canonical_arkit_name",
    "default_asset_path",
    "load_head",
]
