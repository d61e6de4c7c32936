"""`head3d`: a 3D talking head rasterised headlessly with moderngl (EGL; Mesa llvmpipe on a CPU).

Per frame: the animation (see `animation.py`) gives ARKit weights and a head rotation; the
weights mix the asset's morph targets on the CPU (one axpy per active shape, ~0.2 ms for a few
thousand vertices), the mixed positions and normals are uploaded and drawn with a small Lambert
+ Blinn-Phong shader. Frames of concurrent streams are drawn as tiles of one framebuffer,
anti-aliased (none, FXAA or MSAA) and read back with one call per batch, top-down (the
projection is flipped, so no copy). Textures are not used, so that any rig looks the same
and the look is a request parameter: skin comes from the `AvatarLook`; lips, eyebrows and the
iris are painted from where the ARKit shapes move the surface and where the eyes are; a
visibility bake at load keeps the inside of the mouth dark.

- `backend`: `HeadRenderer`, the registered backend (lifecycle, frames, lookahead).
- `batcher`: the GL thread: every GL call, and frames of concurrent streams in batches.
- `options`: `HeadRendererOptions`.
- `gl`: context, program, per-head GPU buffers, drawing a batch.
- `targets`: the batch framebuffers, anti-aliasing passes and readback.
- `shaders`: GLSL sources (lighting, paint, eyes; the depth pass; FXAA and MSAA resolve).
- `camera`: framing, projection and head pose.
- `surface`: per-vertex paint (part albedo, lips, brows, irises).
- `visibility`: the visibility bake.

No GL library is imported here: moderngl is imported when the renderer loads.
"""

from services.stages.render.head3d.backend import HeadRenderer
from services.stages.render.head3d.options import HeadRendererOptions

__all__ = ["HeadRenderer", "HeadRendererOptions"]
