"""The visibility bake of `head3d`: how much of each vertex the camera side can see.

Run once per asset when it is uploaded (it needs the GL context, so on the GL thread); the
result is the `in_light` vertex attribute the shader darkens with.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from services.stages.render.gltf import PART_TEETH, PART_TONGUE, HeadAsset
from services.stages.render.head3d.camera import Framing, gl_matrix, look_at, rotation
from services.stages.render.head3d.shaders import DEPTH_FRAGMENT_SHADER, DEPTH_VERTEX_SHADER


def bake_visibility(
    ctx: Any, asset: HeadAsset, framing: Framing, cam_pos: np.ndarray
) -> np.ndarray:
    """Per vertex, the fraction of a few views from around the camera that see it.

    A cheap stand-in for ambient occlusion that matters for one thing: the inside of the
    mouth (hidden behind closed lips) must render dark when the mouth opens, whatever the
    rig. Skin and eyes are judged with the mouth closed; teeth and tongue with it open, so
    the front teeth stay bright and the back ones fall into shadow.
    """
    lo, hi = asset.bounds()
    center = framing.target
    # Orthographic views of the framed face (not of a whole body, which would leave the
    # mouth a few texels), deep enough that the whole model lies in front of the eye.
    half = 0.75 * max(framing.height, framing.width)
    reach = float(np.linalg.norm(hi - lo) + np.linalg.norm(center - (lo + hi) / 2))
    forward = (cam_pos - center) / np.linalg.norm(cam_pos - center)
    size = 256
    prog = ctx.program(vertex_shader=DEPTH_VERTEX_SHADER, fragment_shader=DEPTH_FRAGMENT_SHADER)
    depth = ctx.depth_texture((size, size))
    fbo = ctx.framebuffer(
        color_attachments=[ctx.renderbuffer((size, size))], depth_attachment=depth
    )
    index_buf = ctx.buffer(asset.indices.astype(np.uint32).tobytes())
    closed = asset.positions
    opened = asset.positions.copy()
    if "jawOpen" in asset.target_names:
        opened += 0.8 * asset.position_deltas[asset.target_names.index("jawOpen")]
    inner = np.isin(asset.parts, (PART_TEETH, PART_TONGUE))
    seen = np.zeros(asset.vertex_count)
    offsets = [(0, 0), (14, 0), (-14, 0), (0, 12), (0, -12)]
    ortho = np.diag([1 / half, 1 / half, -1 / reach, 1.0])
    ortho[2, 3] = -1.0  # maps distance 0..2*reach in front of the eye onto depth -1..1
    try:
        fbo.use()
        ctx.enable(ctx.DEPTH_TEST)
        ctx.disable(ctx.CULL_FACE)
        for positions, mask in ((closed, ~inner), (opened, inner)):
            if not mask.any():
                continue
            vbo = ctx.buffer(positions.astype(np.float32).tobytes())
            vao = ctx.vertex_array(
                prog, [(vbo, "3f", "in_pos")], index_buffer=index_buf, index_element_size=4
            )
            homogeneous = np.concatenate([positions, np.ones((len(positions), 1))], axis=1)
            for yaw, pitch in offsets:
                direction = rotation(yaw, pitch, 0.0) @ forward
                eye = center + direction * reach
                mvp = ortho @ look_at(eye, center, np.array([0.0, 1.0, 0.0]))
                prog["u_mvp"].write(gl_matrix(mvp))
                ctx.clear(depth=1.0)
                vao.render()
                buf = np.frombuffer(
                    fbo.read(components=1, attachment=-1, dtype="f4"), dtype=np.float32
                )
                depth_map = buf.reshape(size, size)
                # The most lenient of each 3x3 neighbourhood: silhouettes must not
                # occlude the vertices that make them.
                padded = np.pad(depth_map, 1, mode="edge")
                lenient = np.max(
                    [padded[dy : dy + size, dx : dx + size] for dy in range(3) for dx in range(3)],
                    axis=0,
                )
                clip = homogeneous @ mvp.T
                px = np.clip(((clip[:, 0] + 1) / 2 * size).astype(int), 0, size - 1)
                py = np.clip(((clip[:, 1] + 1) / 2 * size).astype(int), 0, size - 1)
                vertex_depth = (clip[:, 2] + 1) / 2
                outside = np.abs(clip[:, :2]).max(axis=1) > 1  # off the face: leave lit
                visible = outside | (vertex_depth <= lenient[py, px] + 0.004)
                seen[mask] += visible[mask]
            vao.release()
            vbo.release()
    finally:
        for obj in (fbo, depth, index_buf, prog):
            obj.release()
    return (seen / len(offsets)).astype(np.float32)
