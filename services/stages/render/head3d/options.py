"""Options of the `head3d` renderer (frame size, asset, camera, anti-aliasing, batching, GL)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from services.core.backend import BackendOptions

Antialias = Literal["none", "fxaa", "msaa2", "msaa4", "msaa8"]

# The old integer `msaa` option, still accepted in config files: samples -> antialias mode.
_LEGACY_MSAA: dict[int, Antialias] = {0: "none", 1: "none", 2: "msaa2", 4: "msaa4", 8: "msaa8"}


class HeadRendererOptions(BackendOptions):
    """Options of the `head3d` renderer."""

    width: int = Field(512, ge=64, le=2048, description="Frame width in pixels.")
    height: int = Field(512, ge=64, le=2048, description="Frame height in pixels.")
    fps: float = Field(25.0, ge=25.0, le=60.0, description="Output frames per second.")
    asset_path: str | None = Field(
        None,
        description="Default glTF/GLB head with ARKit-named morph targets; None uses the "
        "facecap.glb shipped in the openfacefx package. An AvatarLook's asset_path overrides it.",
    )
    seed: int = Field(
        0, ge=0, le=2**31 - 1, description="Seed of blink timing and idle head motion."
    )
    egl: bool = Field(
        True,
        description="Create the GL context through EGL (headless; works with Mesa llvmpipe or a "
        "GPU driver). False uses moderngl's default backend, which needs a display.",
    )
    mouth_gain: float = Field(
        1.0, ge=0.0, le=2.0, description="Scale of the lip-sync mouth weights (1 = as mapped)."
    )
    head_motion: float = Field(
        1.0, ge=0.0, le=3.0, description="Scale of the idle head sway (0 keeps the head still)."
    )
    antialias: Antialias = Field(
        "fxaa",
        description="Edge anti-aliasing: none; fxaa (one cheap post pass over the frame: "
        "the best quality per millisecond on a CPU rasteriser); msaa2/4/8 (multisampling, "
        "smoothest; ~2.5x the frame time on llvmpipe, cheap on a GPU; samples are capped by "
        "the driver's maximum). The old `msaa: N` key is read as msaaN (0 = none).",
    )
    max_batch: int = Field(
        1,
        ge=1,
        le=64,
        description="Most frames rendered together in one batch (one framebuffer, one readback): "
        "frames of concurrent render streams are batched. 1 suits a CPU rasteriser (llvmpipe "
        "does the same work per frame either way, and batches measured 6-12% more CPU per "
        "frame); on a GPU use 8-16, so concurrent sessions share one GPU sync and readback. "
        "Capped at load by the GL framebuffer size (max_batch * height).",
    )
    batch_wait_ms: float = Field(
        0.0,
        ge=0.0,
        le=50.0,
        description="How long a batch waits for more frames after its first one arrives; 0 "
        "batches only what is already queued, so a lone stream never waits.",
    )
    lookahead: int = Field(
        2,
        ge=1,
        le=16,
        description="Frames each render stream keeps queued ahead of the one it yields, so the "
        "GL thread renders the next frame while the caller encodes this one.",
    )
    max_assets: int = Field(
        8, ge=1, le=64, description="Heads kept on the GPU at once (least recently used go)."
    )
    fov_deg: float = Field(
        18.0, ge=5.0, le=60.0, description="Vertical field of view of the camera."
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_msaa(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "msaa" not in data:
            return data
        data = dict(data)
        samples = data.pop("msaa")
        if "antialias" in data:
            raise ValueError("give antialias or the old msaa, not both")
        if samples not in _LEGACY_MSAA:
            raise ValueError("msaa must be 0, 1, 2, 4 or 8 samples (prefer antialias: ...)")
        data["antialias"] = _LEGACY_MSAA[samples]
        return data
