"""Load shapes: users over time, the end of every run, spec parsing and its errors."""

from __future__ import annotations

import pytest

from loadtests.shapes import (
    SHAPES,
    Ramp,
    ShapeError,
    Soak,
    Spike,
    Step,
    constant,
    parse_shape,
    shape_from_env,
)


def test_ramp_climbs_linearly_never_early_then_holds():
    ramp = Ramp(start_users=1, users=11, ramp_s=10, hold_s=5)
    assert [ramp.users_at(t) for t in (0, 1, 5, 9.99, 10, 14.9)] == [1, 2, 6, 10, 11, 11]
    assert ramp.users_at(15) is None
    assert ramp.duration_s == 15 and ramp.max_users == 11


def test_ramp_down_is_allowed():
    ramp = Ramp(start_users=10, users=2, ramp_s=8, hold_s=2)
    assert ramp.users_at(0) == 10 and ramp.users_at(4) == 6 and ramp.users_at(9) == 2
    assert ramp.max_users == 10


def test_step_holds_each_plateau_for_step_s():
    step = Step(start_users=2, step_users=3, steps=3, step_s=10)
    assert [step.users_at(t) for t in (0, 9.9, 10, 19.9, 20, 29.9)] == [2, 2, 5, 5, 8, 8]
    assert step.users_at(30) is None
    assert step.max_users == 8 and step.duration_s == 30


def test_spike_goes_up_for_spike_s_and_comes_back_down():
    spike = Spike(base_users=2, peak_users=20, warmup_s=10, spike_s=5, cooldown_s=10)
    assert [spike.users_at(t) for t in (0, 9.9, 10, 14.9, 15, 24.9)] == [2, 2, 20, 20, 2, 2]
    assert spike.users_at(25) is None
    assert spike.tick(12) == (20, 50.0)  # a burst arrives at once, not as a ramp


def test_soak_ramps_briefly_then_holds_until_its_end():
    soak = Soak(users=6, soak_s=100, ramp_s=6)
    assert soak.users_at(0) == 1 and soak.users_at(3) == 3 and soak.users_at(6) == 6
    assert soak.users_at(99.9) == 6 and soak.users_at(100) is None


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_every_shape_ends_and_ticks_like_locust_wants(kind):
    shape = SHAPES[kind]()
    assert 0 < shape.duration_s < 24 * 3600
    ticks = [shape.tick(t) for t in range(int(shape.duration_s))]
    assert all(isinstance(u, int) and 0 <= u <= shape.max_users for u, _ in ticks)
    assert all(rate > 0 for _, rate in ticks)
    assert shape.tick(shape.duration_s) is None and shape.tick(shape.duration_s + 1e6) is None
    assert max(u for u, _ in ticks) == shape.max_users


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("ramp:users=20,ramp_s=60,hold_s=30", Ramp(users=20, ramp_s=60, hold_s=30)),
        ("ramp:start=5,end=1,ramp_s=4,hold_s=0", Ramp(start_users=5, users=1, ramp_s=4, hold_s=0)),
        ("step:start=1,step=2,steps=5,step_s=30", Step(1, 2, 5, 30)),
        ("spike:base=2,peak=20,spike_s=20", Spike(base_users=2, peak_users=20, spike_s=20)),
        ("soak:users=5,duration_s=600", Soak(users=5, soak_s=600)),
        (" SOAK : users = 3 ", Soak(users=3)),
    ],
)
def test_specs_parse_and_round_trip(spec, expected):
    shape = parse_shape(spec)
    assert shape == expected
    assert parse_shape(shape.spec()) == shape
    assert shape.describe()["kind"] == shape.kind


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("wave:users=3", "unknown shape 'wave'; valid: ramp, step, spike, soak"),
        ("ramp:colour=3", "bad item 'colour=3'"),
        ("ramp:users", "bad item 'users'"),
        ("ramp:users=many", "users must be a number"),
        ("step:steps=2.5", "steps must be a whole number"),
        ("soak:users=0", "peak users 0 outside"),
        ("soak:users=-1", "must be a finite number >= 0"),
        ("ramp:ramp_s=0,hold_s=0", "duration 0 s is outside"),
        ("soak:duration_s=1e9", "is outside"),
        ("spike:spawn_rate=0", "spawn_rate must be > 0"),
        ("soak:users=inf", "must be a whole number"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ShapeError, match=message.replace("(", r"\(")):
        parse_shape(spec)


def test_shape_from_env_and_constant():
    assert shape_from_env({}) is None
    assert shape_from_env({"AVATAR_LOADTEST_SHAPE": "soak:users=2"}) == Soak(users=2)
    flat = constant(4, 60)
    assert flat.users_at(30) == 4 and flat.users_at(60) is None and flat.ramp_s == 5
