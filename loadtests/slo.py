"""Service-level objectives a load test is judged against (`loadtests/slo.yaml`, `--slo K=V`).

Objectives are latency quantiles (`ttff_p95_s`, ...), failure rates and minimum throughputs;
`turn_timeout_s`, `window_s` and `min_window_turns` say how timeouts and windows are measured.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from loadtests.errors import LoadTestError

_QUANTILE_KEY = re.compile(r"^(ttfa|ttff|turn|stall)_p(50|90|95|99)_s$")
RATE_KEYS = ("error_rate", "rejected_rate", "timeout_rate")
MIN_KEYS = ("min_completed_turns", "min_turns_per_min")


@dataclass(frozen=True)
class Slo:
    """Objectives a run is judged against, plus how windows and timeouts are measured."""

    objectives: dict[str, float]
    turn_timeout_s: float = 60.0
    window_s: float = 30.0
    min_window_turns: int = 3

    def __post_init__(self) -> None:
        for key, limit in self.objectives.items():
            if not (_QUANTILE_KEY.match(key) or key in RATE_KEYS or key in MIN_KEYS):
                raise LoadTestError(
                    f"unknown SLO objective {key!r}: use <ttfa|ttff|turn|stall>_p<50|90|95|99>_s,"
                    f" {', '.join(RATE_KEYS + MIN_KEYS)}"
                )
            if not isinstance(limit, int | float) or not math.isfinite(limit) or limit < 0:
                raise LoadTestError(f"SLO objective {key} must be a number >= 0, got {limit!r}")
        if not (self.turn_timeout_s > 0 and self.window_s > 0 and self.min_window_turns >= 0):
            raise LoadTestError("turn_timeout_s and window_s must be > 0, min_window_turns >= 0")

    @classmethod
    def load(cls, path: Path, overrides: dict[str, float] | None = None) -> Slo:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise LoadTestError(f"cannot read the SLO file {path}: {exc}") from None
        unknown = set(data) - {"objectives", "turn_timeout_s", "window_s", "min_window_turns"}
        if unknown:
            raise LoadTestError(f"{path}: unknown keys {sorted(unknown)}")
        objectives = dict(data.get("objectives") or {})
        settings = {
            k: data[k] for k in ("turn_timeout_s", "window_s", "min_window_turns") if k in data
        }
        for key, value in (overrides or {}).items():
            if key in ("turn_timeout_s", "window_s", "min_window_turns"):
                settings[key] = value
            else:
                objectives[key] = value
        if "min_window_turns" in settings:
            settings["min_window_turns"] = int(settings["min_window_turns"])
        return cls(objectives=objectives, **settings)

    @staticmethod
    def passes(key: str, value: float | None, limit: float) -> bool:
        if value is None:
            return False
        return value >= limit if key.startswith("min_") else value <= limit

    def check(self, figures: dict[str, float | None], keys=None) -> list[dict[str, Any]]:
        """One entry per objective (or per `keys`): value, limit, and whether it is met."""
        out = []
        for key, limit in self.objectives.items():
            if keys is not None and key not in keys:
                continue
            value = figures.get(key)
            out.append(
                {
                    "objective": key,
                    "op": ">=" if key.startswith("min_") else "<=",
                    "limit": limit,
                    "value": value,
                    "passed": self.passes(key, value, limit),
                }
            )
        return out


def parse_overrides(items: list[str] | None) -> dict[str, float]:
    out = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise LoadTestError(f"--slo wants KEY=NUMBER, got {item!r}") from None
        if not eq:
            raise LoadTestError(f"--slo wants KEY=NUMBER, got {item!r}")
    return out
