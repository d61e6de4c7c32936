"""`head3d`: a 3D talking head rasterised headlessly with moderngl (EGL; Mesa llvmpipe on a CPU).

Per frame: the animation (see `animation.py`) gives ARKit weights and a head rotation; the
weights mix the asset's morph targets on the CPU (a (K,) x (K, V*6) product, well under a
millisecond for a few thousand vertices), the mixed positions and normals are uploaded, drawn
with a small Lambert + Blinn-Phong shader into a multisampled framebuffer, resolved, and read
back (flipped: GL rows run bottom-up). Textures are not used, so that any rig looks the same
and the look is a request parameter: skin comes from the `AvatarLook`; lips, eyebrows and the
iris are painted from where the ARKit shapes move the surface and where the eyes are; a
visibility bake at load keeps the inside of the mouth dark.

- `backend`: `HeadRenderer`, the registered backend (lifecycle, GL thread, frames).
- `options`: `HeadRendererOptions`.
- `gl`: context, program, framebuffers, per-head GPU buffers, draw and readback.
- `shaders`: GLSL sources (lighting, paint, eyes; the depth pass).
- `camera`: framing, projection and head pose.
- `surface`: per-vertex paint (part albedo, lips, brows, irises).
- `visibility`: the visibility bake.

No GL library is imported here: moderngl is imported when the renderer loads.
"""

from services.stages.render.head3d.backend import HeadRenderer
from services.stages.render.head3d.options import HeadRendererOptions

__all__ = ["HeadRenderer", "HeadRendererOptions"]
