"""`head3d` options: anti-aliasing modes (and the old `msaa` key), batching bounds."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.stages.render.head3d import HeadRendererOptions


def test_antialias_is_a_bounded_choice_with_a_measured_default() -> None:
    assert HeadRendererOptions().antialias == "fxaa"
    for mode in ("none", "fxaa", "msaa2", "msaa4", "msaa8"):
        assert HeadRendererOptions(antialias=mode).antialias == mode
    with pytest.raises(ValidationError):
        HeadRendererOptions(antialias="ssaa16")


@pytest.mark.parametrize(
    ("samples", "mode"), [(0, "none"), (1, "none"), (2, "msaa2"), (4, "msaa4"), (8, "msaa8")]
)
def test_the_old_msaa_key_still_reads(samples: int, mode: str) -> None:
    assert HeadRendererOptions.model_validate({"msaa": samples}).antialias == mode


def test_bad_msaa_values_are_clear_errors() -> None:
    with pytest.raises(ValidationError, match="msaa must be 0, 1, 2, 4 or 8"):
        HeadRendererOptions.model_validate({"msaa": 3})
    with pytest.raises(ValidationError, match="not both"):
        HeadRendererOptions.model_validate({"msaa": 4, "antialias": "fxaa"})


def test_batching_options_are_bounded() -> None:
    opts = HeadRendererOptions()
    assert (opts.max_batch, opts.batch_wait_ms, opts.lookahead) == (1, 0.0, 2)
    for bad in ({"max_batch": 0}, {"max_batch": 65}, {"batch_wait_ms": -1}, {"lookahead": 0}):
        with pytest.raises(ValidationError):
            HeadRendererOptions(**bad)
