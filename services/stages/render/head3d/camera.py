"""Where `head3d`'s camera stands and how the head moves: framing, projection, head pose.

The camera is fixed per asset: it frames the face (from the eyes when the head has two) and
looks at it along -z from a distance that fits the framed height into the field of view. The
head's idle motion rotates the model about a neck pivot, so the face stays in frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from services.stages.render.gltf import PART_SKIN, HeadAsset


def perspective(fovy_deg: float, aspect: float, near: float, far: float) -> np.ndarray:
    """OpenGL perspective projection (right-handed eye space, looking down -z)."""
    f = 1.0 / math.tan(math.radians(fovy_deg) / 2)
    return np.array(
        [
            [f / aspect, 0, 0, 0],
            [0, f, 0, 0],
            [0, 0, (far + near) / (near - far), 2 * far * near / (near - far)],
            [0, 0, -1, 0],
        ]
    )


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """View matrix of a camera at `eye` looking at `target`."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    side = np.cross(forward, up)
    side = side / np.linalg.norm(side)
    true_up = np.cross(side, forward)
    view = np.eye(4)
    view[0, :3], view[1, :3], view[2, :3] = side, true_up, -forward
    view[:3, 3] = -view[:3, :3] @ eye
    return view


def rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """3x3 rotation `Ry(yaw) @ Rx(pitch) @ Rz(roll)`, angles in degrees."""
    y, p, r = (math.radians(v) for v in (yaw_deg, pitch_deg, roll_deg))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


def gl_matrix(m: np.ndarray) -> bytes:
    """A 4x4 matrix as the bytes of a GLSL `mat4` uniform (float32, column-major)."""
    return np.ascontiguousarray(m.T, dtype=np.float32).tobytes()


@dataclass(frozen=True)
class Framing:
    """What the camera must show of a head, in scene space."""

    target: np.ndarray  # point the camera looks at
    height: float  # world-space height to fit in the frame
    width: float
    pivot: np.ndarray  # neck point the head rotates around


def frame_face(asset: HeadAsset) -> Framing:
    """Frame the face from the eye positions (so a half-body avatar still gets a close-up of
    the face), or the skin bounds for a head without eyes."""
    lo, hi = asset.bounds(PART_SKIN)
    if len(asset.eye_centers) >= 2:
        eyes = asset.eye_centers
        left, right = eyes[np.argmin(eyes[:, 0])], eyes[np.argmax(eyes[:, 0])]
        ipd = float(np.linalg.norm(right - left))
        mid = (left + right) / 2
        if ipd > 1e-6:
            # Proportions of a human face: eyes a little above the middle of a close-up.
            target = mid + np.array([0.0, -0.5 * ipd, 0.0])
            pivot = mid + np.array([0.0, -1.6 * ipd, -1.0 * ipd])
            return Framing(target, 3.7 * ipd, 3.2 * ipd, pivot)
    center = (lo + hi) / 2
    size = hi - lo
    return Framing(center, float(size[1]) * 1.15, float(size[0]) * 1.15, center)


@dataclass(frozen=True)
class Camera:
    """A camera placed for one head.

    Attributes:
        view_proj: 4x4 projection @ view matrix.
        position: The camera's position in scene space.
        pivot: The neck point the head rotates around (from the framing).
    """

    view_proj: np.ndarray
    position: np.ndarray
    pivot: np.ndarray


def place_camera(
    asset: HeadAsset, framing: Framing, width: int, height: int, fov_deg: float
) -> Camera:
    """The camera that fits `framing` (of `asset`) into a `width` x `height` frame."""
    aspect = width / height
    half_fov = math.radians(fov_deg) / 2
    fit_height = max(framing.height, framing.width / aspect)
    distance = fit_height / 2 / math.tan(half_fov)
    cam_pos = framing.target + np.array([0.0, 0.0, distance])
    extent = float(np.linalg.norm(asset.bounds()[1] - asset.bounds()[0]))
    near = max(distance - extent, distance * 0.05)
    view_proj = perspective(fov_deg, aspect, near, distance + extent) @ look_at(
        cam_pos, framing.target, np.array([0.0, 1.0, 0.0])
    )
    return Camera(view_proj=view_proj, position=cam_pos, pivot=framing.pivot)


def model_matrix(
    pivot: np.ndarray, yaw_deg: float, pitch_deg: float, roll_deg: float
) -> np.ndarray:
    """4x4 model matrix rotating the head about `pivot`."""
    turn = rotation(yaw_deg, pitch_deg, roll_deg)
    model = np.eye(4)
    model[:3, :3] = turn
    model[:3, 3] = pivot - turn @ pivot
    return model
