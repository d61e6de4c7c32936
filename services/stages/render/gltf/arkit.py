"""The 52 ARKit blendshape names, and the mapping of a rig's morph target names onto them.

Rigs spell the names many ways (`eyeBlink_L`, `EyeBlinkLeft`, `blendShape1.eyeBlinkLeft`);
everything downstream (animation weights, the renderer's shape index) uses the canonical ARKit
spelling, so the loader maps each morph target name through `canonical_arkit_name`.
"""

from __future__ import annotations

import re

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

# Lower-case key without separators -> canonical name; the lookup key of `canonical_arkit_name`.
_ARKIT_KEYS = {name.lower(): name for name in ARKIT_BLENDSHAPES}
_ARKIT_KEYS_LONGEST_FIRST = sorted(_ARKIT_KEYS, key=len, reverse=True)
_SIDE_SUFFIX = re.compile(r"(?:[_\-. ]([LRlr])|([LR]))$")


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
