"""Where `head3d` draws a batch of frames, how it anti-aliases them, and how it reads them back.

A batch of `n` frames is drawn as `n` tiles stacked vertically in one framebuffer (an atlas of
`max_batch` tiles), then anti-aliased and read back with one call for all of them: one sync
with the GPU per batch, not per frame. The projection is flipped vertically (see `gl.py`), so
GL's bottom-up rows come back top-down and tile `i` is rows `[i*H, (i+1)*H)` of the read.

Anti-aliasing modes:
- `none`: draw into a plain colour buffer and read it.
- `fxaa`: draw into a texture; a MARK pass copies it into the output and flags edge pixels in
  the output's depth buffer, a BLEND pass filters only the flagged pixels (see `shaders.py`).
- `msaaN`: draw into a multisampled texture, resolve it with a pass, read the result.
The passes cover only the tiles in use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from services.stages.render.head3d.shaders import (
    FXAA_FRAGMENT_SHADER,
    POST_VERTEX_SHADER,
    RESOLVE_FRAGMENT_SHADER,
    with_define,
)


def max_tiles(ctx: Any, height: int) -> int:
    """How many frames of `height` rows one framebuffer holds on this driver."""
    limit = min(
        int(ctx.info["GL_MAX_RENDERBUFFER_SIZE"]),
        int(ctx.info["GL_MAX_TEXTURE_SIZE"]),
        int(ctx.info["GL_MAX_VIEWPORT_DIMS"][1]),
    )
    return max(1, limit // height)


def _set(prog: Any, name: str, value: Any) -> None:
    """Set a uniform unless the compiler dropped it as unused."""
    if name in prog:
        prog[name].value = value


class FrameTargets:
    """The framebuffers of one frame size and anti-aliasing mode, `tiles` frames high.

    Args:
        ctx: The moderngl context (the caller's GL thread owns it).
        width: Frame width.
        height: Frame height (one tile).
        tiles: Frames per batch at most.
        antialias: `none`, `fxaa` or `msaa2/4/8` (samples capped by the driver; a driver
            without multisampling draws `none`).
    """

    def __init__(self, ctx: Any, width: int, height: int, tiles: int, antialias: str) -> None:
        self.ctx = ctx
        self.width, self.height, self.tiles = width, height, tiles
        self._objects: list[Any] = []
        self._passes: list[tuple[Any, str]] = []  # (vertex array, depth function) in order
        size = (width, height * tiles)
        samples = int(antialias[4:]) if antialias.startswith("msaa") else 0
        self.samples = min(samples, ctx.max_samples) if samples > 1 else 0
        if antialias == "none" or (samples and not self.samples):
            color = self._keep(ctx.renderbuffer(size, 4))
            self.scene = self._keep(
                ctx.framebuffer([color], self._keep(ctx.depth_renderbuffer(size)))
            )
            self.output = self.scene
            self._image = None
            return
        if self.samples:
            self._image = self._keep(ctx.texture(size, 4, samples=self.samples))
            depth = self._keep(ctx.depth_renderbuffer(size, samples=self.samples))
            resolve = self._program(RESOLVE_FRAGMENT_SHADER)
            _set(resolve, "u_samples", self.samples)
            self._passes.append((self._keep(ctx.vertex_array(resolve, [])), ""))
            self.output = self._keep(ctx.framebuffer([self._keep(ctx.renderbuffer(size, 4))]))
        else:
            self._image = self._keep(ctx.texture(size, 4))
            self._image.filter = (ctx.LINEAR, ctx.LINEAR)
            self._image.repeat_x = self._image.repeat_y = False
            depth = self._keep(ctx.depth_renderbuffer(size))
            for define, depth_func in (("MARK", "1"), ("BLEND", ">")):
                prog = self._program(with_define(FXAA_FRAGMENT_SHADER, define))
                _set(prog, "u_size", (float(width), float(height * tiles)))
                _set(prog, "u_tile_h", height)
                self._passes.append((self._keep(ctx.vertex_array(prog, [])), depth_func))
            self.output = self._keep(
                ctx.framebuffer(
                    [self._keep(ctx.renderbuffer(size, 4))],
                    self._keep(ctx.depth_renderbuffer(size)),
                )
            )
        self.scene = self._keep(ctx.framebuffer([self._image], depth))

    def _keep(self, obj: Any) -> Any:
        self._objects.append(obj)
        return obj

    def _program(self, fragment_shader: str) -> Any:
        prog = self._keep(
            self.ctx.program(vertex_shader=POST_VERTEX_SHADER, fragment_shader=fragment_shader)
        )
        _set(prog, "u_image", 0)
        return prog

    def tile_viewport(self, index: int) -> tuple[int, int, int, int]:
        """The viewport of tile `index` in the atlas."""
        return (0, index * self.height, self.width, self.height)

    def begin(self) -> None:
        """Bind the scene framebuffer for drawing tiles, with the usual depth test."""
        self.scene.use()
        self.ctx.enable(self.ctx.DEPTH_TEST)
        self.ctx.depth_func = "<"

    def read(self, count: int) -> np.ndarray:
        """Finish the first `count` tiles and read them back as (count, H, W, 3) uint8."""
        region = (0, 0, self.width, self.height * count)
        if self._passes:
            self.output.use()
            self.output.viewport = region
            self._image.use(location=0)
            for vao, depth_func in self._passes:
                if depth_func:
                    self.ctx.enable(self.ctx.DEPTH_TEST)
                    self.ctx.depth_func = depth_func
                else:
                    self.ctx.disable(self.ctx.DEPTH_TEST)
                vao.render(self.ctx.TRIANGLES, vertices=3)
        out = np.empty((count, self.height, self.width, 3), dtype=np.uint8)
        self.output.read_into(out, viewport=region, components=3, alignment=1)
        return out

    def release(self) -> None:
        for obj in reversed(self._objects):
            obj.release()
        self._objects.clear()
