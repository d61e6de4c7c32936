"""What `head3d` paints on a head instead of textures: per-vertex colour, lips, brows, irises.

Textures are not used, so that any ARKit rig looks the same and the look is a request
parameter: parts get flat albedos, skin gets its colour per request (a shader uniform), and
lips, eyebrows and irises are found from geometry: where the ARKit shapes move the surface and
where the eyes are. `vertex_attributes` packs it all into the static vertex buffer.
"""

from __future__ import annotations

import numpy as np

from services.stages.render.gltf import (
    PART_CLOTH,
    PART_EYE,
    PART_HAIR,
    PART_SKIN,
    PART_TEETH,
    PART_TONGUE,
    HeadAsset,
)

_PART_ALBEDO = {
    PART_SKIN: (1.0, 1.0, 1.0),  # unused: skin colour comes from the look
    PART_EYE: (0.9, 0.88, 0.84),
    PART_TEETH: (0.92, 0.89, 0.8),
    PART_TONGUE: (0.72, 0.36, 0.36),
    PART_HAIR: (0.16, 0.11, 0.08),
    PART_CLOTH: (0.25, 0.28, 0.33),
}
_LIP_GROUPS = (
    ("mouthFunnel", "mouthPucker"),
    ("mouthRollLower", "mouthRollUpper"),
    ("mouthUpperUpLeft", "mouthUpperUpRight", "mouthLowerDownLeft", "mouthLowerDownRight"),
)

# The static vertex buffer: moderngl format and the shader inputs it feeds, in order.
VERTEX_LAYOUT = (
    "3f 1f 1f 1f 3f 1f",
    "in_albedo",
    "in_skin",
    "in_lip",
    "in_brow",
    "in_eye",
    "in_light",
)


def vertex_attributes(asset: HeadAsset, cam_pos: np.ndarray, visibility: np.ndarray) -> np.ndarray:
    """(V, 10) float32 per vertex, laid out as `VERTEX_LAYOUT`: albedo, is-skin, lip, brow,
    eye direction, baked visibility."""
    static = np.zeros((asset.vertex_count, 10), dtype=np.float32)
    for part, rgb in _PART_ALBEDO.items():
        static[asset.parts == part, :3] = rgb
    static[:, 3] = asset.parts == PART_SKIN
    static[:, 4] = lip_mask(asset)
    static[:, 5] = brow_mask(asset)
    static[:, 6:9] = eye_directions(asset, cam_pos)
    static[:, 9] = visibility
    return static


def lip_mask(asset: HeadAsset) -> np.ndarray:
    """0..1 per vertex: how much of a lip it is.

    Lips are what moves under all three of rounding (funnel/pucker), rolling and raising /
    lowering the lips; each alone also drags the cheeks or the chin along, their geometric mean
    singles out the lips on ARKit rigs without needing a texture.
    """
    groups = [[n for n in group if n in asset.target_names] for group in _LIP_GROUPS]
    if not all(groups):
        return np.zeros(asset.vertex_count, dtype=np.float32)
    score = np.ones(asset.vertex_count)
    for group in groups:
        rows = [asset.target_names.index(n) for n in group]
        motion = np.linalg.norm(asset.position_deltas[rows], axis=2).sum(axis=0)
        motion[asset.parts != PART_SKIN] = 0.0
        score *= motion / max(float(motion.max()), 1e-12)
    score = np.cbrt(score)
    score /= max(float(score.max()), 1e-12)
    x = np.clip((score - 0.45) / 0.2, 0.0, 1.0)
    return (x * x * (3 - 2 * x)).astype(np.float32)


def brow_mask(asset: HeadAsset) -> np.ndarray:
    """0..1 per vertex: painted eyebrows (the default head is untextured and browless).

    Per side, the brow line is a parabola through the front-facing skin above the eye that
    browDown moves the most, and the brow a band around it: thick towards the nose, thin
    outwards. Heads without two eyes or browDown shapes get none.
    """
    out = np.zeros(asset.vertex_count, dtype=np.float32)
    eyes = asset.eye_centers
    names = ("browDownLeft", "browDownRight")
    if len(eyes) != 2 or not all(n in asset.target_names for n in names):
        return out
    ipd = float(np.linalg.norm(eyes[0] - eyes[1]))
    skin = asset.parts == PART_SKIN
    for name in names:
        motion = np.linalg.norm(asset.position_deltas[asset.target_names.index(name)], axis=1)
        motion[~skin] = 0.0
        if motion.max() <= 0 or ipd <= 0:
            continue
        # This brow's eye is the one its motion centres on.
        eye = eyes[
            np.argmin(
                [
                    np.average(np.linalg.norm(asset.positions - c, axis=1), weights=motion + 1e-9)
                    for c in eyes
                ]
            )
        ]
        rel = (asset.positions - eye) / ipd
        region = (
            skin
            & (asset.normals[:, 2] > 0.2)
            & (np.abs(rel[:, 0]) < 0.5)
            & (rel[:, 1] > 0.05)
            & (rel[:, 1] < 0.8)
            & (rel[:, 2] > -0.3)
        )
        if region.sum() < 6 or motion[region].max() <= 0:
            continue
        weight = (motion[region] / motion[region].max()) ** 2
        line = np.polyval(np.polyfit(rel[region, 0], rel[region, 1], 2, w=weight), rel[:, 0])
        inner = -np.sign(eye[0]) * rel[:, 0]  # > 0 towards the nose
        thickness = 0.085 * (1 + 0.5 * np.clip(inner / 0.4, -1, 1))
        across = (rel[:, 1] - line) / thickness
        ends = np.clip((0.30 - inner) / 0.06, 0, 1) * np.clip((0.45 + inner) / 0.1, 0, 1)
        band = np.clip(1.6 * np.exp(-(across**4)) * ends, 0, 1) * region
        out = np.maximum(out, band.astype(np.float32))
    return out


def eye_directions(asset: HeadAsset, cam_pos: np.ndarray) -> np.ndarray:
    """Per vertex, its direction from its eyeball's centre in a frame whose +z looks at the
    camera (zeros off the eyes); the shader paints the iris around +z."""
    out = np.zeros((asset.vertex_count, 3), dtype=np.float32)
    for eye, center in enumerate(asset.eye_centers):
        mask = asset.eye_of_vertex == eye
        forward = cam_pos - center
        forward /= np.linalg.norm(forward)
        side = np.cross(np.array([0.0, 1.0, 0.0]), forward)
        side /= np.linalg.norm(side)
        up = np.cross(forward, side)
        offset = asset.positions[mask] - center
        offset /= np.maximum(np.linalg.norm(offset, axis=1, keepdims=True), 1e-9)
        out[mask] = offset @ np.stack([side, up, forward]).T
    return out
