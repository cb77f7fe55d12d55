"""The pace (fake clock) and the failure policy: pure logic."""

from __future__ import annotations

import math

import pytest

from airflow_provider_cometapi.batch import pacing
from airflow_provider_cometapi.batch.pacing import CreatePacer, resume_after, slots
from airflow_provider_cometapi.batch.policy import FailurePolicy
from airflow_provider_cometapi.exceptions import InvalidParameterError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run_for(pacer: CreatePacer, clock: Clock, seconds: float, *, throttle_every: float | None = None) -> int:
    """Creates the pacer lets through in ``seconds`` of fake time."""
    end, created, next_throttle = clock.now + seconds, 0, clock.now
    while clock.now < end:
        if throttle_every is not None and clock.now >= next_throttle:
            pacer.throttled()
            next_throttle += throttle_every
        delay = pacer.delay()
        if delay > 0:
            clock.now += max(1e-6, min(delay, 0.01) if throttle_every else delay)
            continue
        pacer.took()
        created += 1
    return created


def test_the_rate_holds_a_hair_under_creates_per_minute():
    clock = Clock()
    pacer = CreatePacer(600, clock=clock)
    assert pacer.per_minute() == pytest.approx(600 * pacing.PACE_FRACTION)
    assert 575 <= run_for(pacer, clock, 60) <= 600  # at most a second's worth banked at the start


def test_a_pause_banks_at_most_one_second():
    clock = Clock()
    pacer = CreatePacer(600, clock=clock)
    clock.now += 3600
    burst = 0
    while pacer.delay() == 0:
        pacer.took()
        burst += 1
    assert burst == math.floor(10 * pacing.PACE_FRACTION)


def test_throttling_slows_gently_at_most_once_per_cooldown_then_recovers():
    clock = Clock()
    pacer = CreatePacer(600, clock=clock)
    target = 600 * pacing.PACE_FRACTION
    for _ in range(5):  # one burst of 429s
        pacer.throttled()
    assert pacer.per_minute() == pytest.approx(target * pacing.SLOWDOWN_FACTOR)
    clock.now += pacing.SLOWDOWN_COOLDOWN
    pacer.throttled()
    assert pacer.per_minute() == pytest.approx(target * pacing.SLOWDOWN_FACTOR**2)
    for _ in range(40):
        clock.now += pacing.SLOWDOWN_COOLDOWN
        pacer.throttled()
    assert pacer.per_minute() == pytest.approx(600 * pacing.MIN_RATE_FRACTION)  # the floor
    clock.now += pacing.RECOVERY_DELAY + 1 / pacing.RECOVERY_PER_SECOND + 1
    pacer.delay()
    assert pacer.per_minute() == pytest.approx(target)  # back to the pace, never above it


def test_one_429_at_the_limit_costs_little():
    clock = Clock()
    calm = run_for(CreatePacer(6000, clock=clock), clock, 30)
    pacer = CreatePacer(6000, clock=clock)
    pacer.throttled()  # arrival jitter: one create found the gateway's bucket empty
    assert run_for(pacer, clock, 30) >= 0.97 * calm
    assert pacer.per_minute() == pytest.approx(6000 * pacing.PACE_FRACTION)  # recovered within the run


def test_a_gateway_slower_than_the_limit_brings_the_pace_down_to_it():
    """A gateway allowing 600 a minute, the batch told 6,000: the 429s (each waited out) stop the overshoot."""
    clock = Clock()
    pacer = CreatePacer(6000, clock=clock)
    gateway_tokens, gateway_at, created, throttled = 10.0, clock.now, 0, 0
    end = clock.now + 120
    while clock.now < end:
        delay = pacer.delay()
        if delay > 0:
            clock.now += delay
            continue
        pacer.took()
        gateway_tokens = min(10.0, gateway_tokens + (clock.now - gateway_at) * 10.0)
        gateway_at = clock.now
        if gateway_tokens >= 1:
            gateway_tokens -= 1
            created += 1
            clock.now += 0.002  # the create's round trip
        else:
            throttled += 1
            pacer.throttled()
            clock.now += 1.0  # the retry policy waits out Retry-After: 1
    assert created >= 0.6 * 10 * 120  # most of what the gateway allows
    assert throttled <= 100  # the pace settles near the gateway's rate instead of hammering it
    assert pacer.per_minute() < 2000


def test_a_pace_carried_over_a_deferral_recovers_too():
    clock = Clock()
    pacer = CreatePacer(600, clock=clock)
    pacer.resume_at(150 / 60)  # the rate an earlier wave slowed to, read back after the wait
    assert pacer.per_minute() == pytest.approx(150)
    clock.now += pacing.RECOVERY_DELAY + 1 / pacing.RECOVERY_PER_SECOND + 1
    pacer.delay()
    assert pacer.per_minute() == pytest.approx(600 * pacing.PACE_FRACTION)
    fresh = CreatePacer(600, clock=clock)
    fresh.resume_at(900 / 60)  # never above the pace, and nothing to recover from
    assert fresh.per_minute() == pytest.approx(600 * pacing.PACE_FRACTION)


def test_under_throttling_fewer_creates_go_out():
    clock = Clock()
    calm = run_for(CreatePacer(600, clock=clock), clock, 30)
    throttled = run_for(CreatePacer(600, clock=clock), clock, 30, throttle_every=2.0)
    assert throttled < calm / 2


def test_in_flight_cap_and_resume_threshold():
    assert slots(100, 40) == 60 and slots(100, 100) == 0 and slots(100, 120) == 0
    assert resume_after(100, 100, pending=5) == 50
    assert resume_after(100, 10, pending=5) == 10
    assert resume_after(100, 73, pending=0) == 73  # nothing left to create: wait for all
    assert resume_after(1, 1, pending=3) == 1


@pytest.mark.parametrize("value", [0, -1, 1001, 2.5, True, "10", None])
def test_bad_max_in_flight(value):
    with pytest.raises(InvalidParameterError, match="max_in_flight must be"):
        pacing.max_in_flight(value)


@pytest.mark.parametrize("value", [0, -5, math.nan, math.inf, 100_001, True, "600", None])
def test_bad_creates_per_minute(value):
    with pytest.raises(InvalidParameterError, match="creates_per_minute must be"):
        pacing.creates_per_minute(value)


@pytest.mark.parametrize(
    ("max_failed", "total", "failed", "exceeded"),
    [
        (0, 100, 0, False),
        (0, 100, 1, True),
        (3, 100, 3, False),
        (3, 100, 4, True),
        (0.01, 1000, 10, False),
        (0.01, 1000, 11, True),
        (0.01, 50, 1, True),  # 1 % of 50 is 0 inputs
        (0.5, 0, 0, False),
    ],
)
def test_failure_policy(max_failed, total, failed, exceeded):
    assert FailurePolicy.parse(max_failed, 0).exceeded(failed, total) is exceeded


@pytest.mark.parametrize(
    ("max_failed", "retry_failed", "match"),
    [
        (-1, 0, "max_failed"),
        (1.0, 0, "max_failed"),
        (math.nan, 0, "max_failed"),
        ("5", 0, "max_failed"),
        (True, 0, "max_failed"),
        (0, -1, "retry_failed"),
        (0, 11, "retry_failed"),
        (0, 1.5, "retry_failed"),
    ],
)
def test_bad_policy_arguments(max_failed, retry_failed, match):
    with pytest.raises(InvalidParameterError, match=match):
        FailurePolicy.parse(max_failed, retry_failed)
