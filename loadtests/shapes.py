"""Load shapes for the locust load tests: how many users are active at each second of a run.

Each shape is a plain dataclass with `users_at(t)` (None once the run is over), `duration_s`
and `max_users`, so it is unit-testable and importable without locust (importing locust
monkey-patches the process with gevent, which Ray does not survive). The locustfile wraps the
selected shape in a `LoadTestShape`; the runner selects it with a spec string:

    ramp:users=20,ramp_s=60,hold_s=30      step:start=1,step=2,steps=5,step_s=30
    spike:base=2,peak=20,warmup_s=30,spike_s=20,cooldown_s=60      soak:users=5,duration_s=600

passed as `--shape SPEC` to `loadtests.run` or as `$AVATAR_LOADTEST_SHAPE` to locust.
Every shape ends by itself: a load test can never run unbounded.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import ClassVar

ENV_VAR = "AVATAR_LOADTEST_SHAPE"
# A shape longer than this is almost certainly a typo (ms for s); soak tests stay under a day.
MAX_DURATION_S = 24 * 3600.0
MAX_USERS = 100_000


class ShapeError(ValueError):
    """A shape spec that cannot be parsed or whose numbers are out of range."""


@dataclass(frozen=True)
class Shape:
    """Common bounds checks and the locust `tick` contract; subclasses define `_users(t)`."""

    kind: ClassVar[str] = ""
    # Short spec keys -> field names, so specs stay typeable on a command line.
    aliases: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ShapeError(f"{self.kind}: {f.name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ShapeError(f"{self.kind}: {f.name} must be a finite number >= 0")
        if not 0 < self.duration_s <= MAX_DURATION_S:
            raise ShapeError(
                f"{self.kind}: duration {self.duration_s:g} s is outside (0, {MAX_DURATION_S:g}]"
            )
        if not 1 <= self.max_users <= MAX_USERS:
            raise ShapeError(f"{self.kind}: peak users {self.max_users} outside [1, {MAX_USERS}]")
        if self.spawn_rate <= 0:
            raise ShapeError(f"{self.kind}: spawn_rate must be > 0")

    @property
    def duration_s(self) -> float:
        raise NotImplementedError

    @property
    def max_users(self) -> int:
        raise NotImplementedError

    def _users(self, t: float) -> int:
        raise NotImplementedError

    def users_at(self, t: float) -> int | None:
        """Users wanted `t` seconds into the run, or None once it is over (locust stops)."""
        if t >= self.duration_s:
            return None
        return self._users(max(0.0, t))

    def tick(self, t: float) -> tuple[int, float] | None:
        """What locust's `LoadTestShape.tick` returns: (users, spawn rate) or None to stop."""
        users = self.users_at(t)
        return None if users is None else (users, float(self.spawn_rate))

    def spec(self) -> str:
        """The spec string that parses back to this shape."""
        values = ",".join(f"{f.name}={getattr(self, f.name):g}" for f in dataclasses.fields(self))
        return f"{self.kind}:{values}"

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "spec": self.spec(),
            "duration_s": self.duration_s,
            "max_users": self.max_users,
            **dataclasses.asdict(self),
        }


@dataclass(frozen=True)
class Ramp(Shape):
    """Linear ramp from `start_users` to `users` over `ramp_s`, then hold for `hold_s`."""

    kind: ClassVar[str] = "ramp"
    aliases: ClassVar[dict[str, str]] = {"start": "start_users", "end": "users"}

    start_users: int = 1
    users: int = 10
    ramp_s: float = 60.0
    hold_s: float = 30.0
    spawn_rate: float = 5.0

    @property
    def duration_s(self) -> float:
        return self.ramp_s + self.hold_s

    @property
    def max_users(self) -> int:
        return max(self.start_users, self.users)

    def _users(self, t: float) -> int:
        if self.ramp_s <= 0 or t >= self.ramp_s:
            return self.users
        # Round down: the ramp reaches its top at the end of the ramp, never early.
        return self.start_users + math.floor((self.users - self.start_users) * t / self.ramp_s)


@dataclass(frozen=True)
class Step(Shape):
    """`start_users`, then `step_users` more every `step_s`, for `steps` plateaus in all.

    Plateaus are what capacity is read from: each holds a fixed user count long enough for
    throughput and latency at that count to settle.
    """

    kind: ClassVar[str] = "step"
    aliases: ClassVar[dict[str, str]] = {"start": "start_users", "step": "step_users"}

    start_users: int = 1
    step_users: int = 2
    steps: int = 5
    step_s: float = 30.0
    spawn_rate: float = 5.0

    @property
    def duration_s(self) -> float:
        return self.steps * self.step_s

    @property
    def max_users(self) -> int:
        return self.start_users + self.step_users * max(0, self.steps - 1)

    def _users(self, t: float) -> int:
        k = min(int(t // self.step_s), self.steps - 1)
        return self.start_users + self.step_users * k


@dataclass(frozen=True)
class Spike(Shape):
    """`base_users` for `warmup_s`, `peak_users` for `spike_s`, `base_users` for `cooldown_s`.

    The cooldown is what shows an autoscaled stage coming back down after the burst.
    """

    kind: ClassVar[str] = "spike"
    aliases: ClassVar[dict[str, str]] = {"base": "base_users", "peak": "peak_users"}

    base_users: int = 2
    peak_users: int = 20
    warmup_s: float = 30.0
    spike_s: float = 20.0
    cooldown_s: float = 60.0
    # Fast, so the burst arrives as a burst rather than as a ramp.
    spawn_rate: float = 50.0

    @property
    def duration_s(self) -> float:
        return self.warmup_s + self.spike_s + self.cooldown_s

    @property
    def max_users(self) -> int:
        return max(self.base_users, self.peak_users)

    def _users(self, t: float) -> int:
        if self.warmup_s <= t < self.warmup_s + self.spike_s:
            return self.peak_users
        return self.base_users


@dataclass(frozen=True)
class Soak(Shape):
    """A constant `users` for `soak_s` seconds in all (after a short ramp): slow leaks show."""

    kind: ClassVar[str] = "soak"
    aliases: ClassVar[dict[str, str]] = {"duration_s": "soak_s", "duration": "soak_s"}

    users: int = 5
    soak_s: float = 600.0
    ramp_s: float = 10.0
    spawn_rate: float = 5.0

    @property
    def duration_s(self) -> float:
        return self.soak_s

    @property
    def max_users(self) -> int:
        return self.users

    def _users(self, t: float) -> int:
        if self.ramp_s > 0 and t < self.ramp_s:
            return max(1, math.ceil(self.users * t / self.ramp_s))
        return self.users


SHAPES: dict[str, type[Shape]] = {cls.kind: cls for cls in (Ramp, Step, Spike, Soak)}


def parse_shape(spec: str) -> Shape:
    """`kind:key=value,...` -> a shape; unknown kinds or keys name the valid ones."""
    kind, _, rest = spec.strip().partition(":")
    cls = SHAPES.get(kind.strip().lower())
    if cls is None:
        raise ShapeError(f"unknown shape {kind!r}; valid: {', '.join(SHAPES)}")
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip()
        key = cls.aliases.get(key, key)
        if not eq or key not in names:
            valid = sorted(names | set(cls.aliases))
            raise ShapeError(f"{cls.kind}: bad item {item!r}; keys: {', '.join(valid)}")
        try:
            number = float(raw)
        except ValueError:
            raise ShapeError(f"{cls.kind}: {key} must be a number, got {raw!r}") from None
        field_type = next(f.type for f in dataclasses.fields(cls) if f.name == key)
        if field_type in (int, "int"):  # annotations are strings (postponed evaluation)
            if not number.is_integer():
                raise ShapeError(f"{cls.kind}: {key} must be a whole number, got {raw!r}")
            number = int(number)
        values[key] = number
    return cls(**values)


def shape_from_env(environ: dict[str, str] | None = None) -> Shape | None:
    spec = (environ if environ is not None else os.environ).get(ENV_VAR, "").strip()
    return parse_shape(spec) if spec else None


def constant(users: int, duration_s: float) -> Soak:
    """A fixed user count for a bounded time (what `--users N --duration S` means)."""
    return Soak(users=users, soak_s=duration_s, ramp_s=min(5.0, duration_s / 4))
