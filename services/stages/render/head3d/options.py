"""Options of the `head3d` renderer (frame size, asset, camera, animation scales, GL backend)."""

from __future__ import annotations

from pydantic import Field, field_validator

from services.core.backend import BackendOptions


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
    msaa: int = Field(
        4, ge=0, le=8, description="Multisample anti-aliasing samples (0 = off; 4 is smooth)."
    )
    max_assets: int = Field(
        8, ge=1, le=64, description="Heads kept on the GPU at once (least recently used go)."
    )
    fov_deg: float = Field(
        18.0, ge=5.0, le=60.0, description="Vertical field of view of the camera."
    )

    @field_validator("msaa")
    @classmethod
    def _msaa_power_of_two(cls, value: int) -> int:
        if value not in (0, 1, 2, 4, 8):
            raise ValueError("msaa must be 0, 1, 2, 4 or 8 samples")
        return value
