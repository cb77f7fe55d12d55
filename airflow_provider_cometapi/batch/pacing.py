"""
How fast a batch creates: at most ``max_in_flight`` unfinished predictions, at most
``creates_per_minute``, and slower while the gateway throttles.

``CreatePacer`` holds no I/O: it is told the clock, each create and each HTTP 429, and says how
long to wait before the next create. The pace is a token bucket refilled at the current rate
(at most one second's worth banked, so a pause never turns into a burst). It runs a hair under
the limit (``PACE_FRACTION``): against a gateway whose bucket refills exactly as fast, arrival
jitter alone would drain that bucket and draw 429s; a few percent under, it stays full.

A 429 is met gently: the rate drops by ``SLOWDOWN_FACTOR`` (at most once per
``SLOWDOWN_COOLDOWN``, since one burst of throttling answers several creates), down to a floor of
a twentieth of the limit; after ``RECOVERY_DELAY`` quiet seconds it grows back by
``RECOVERY_PER_SECOND`` of the limit each second. The wait the gateway asks for (``Retry-After``)
is the retry policy's (``RetryPolicy.on_throttled`` tells the pacer), so the pace need not also
halve: a gateway slower than ``creates_per_minute`` still brings it down, a tenth or so per second
of 429s, to where the 429s stop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from numbers import Real
from typing import Any

from airflow_provider_cometapi.exceptions import InvalidParameterError

MAX_IN_FLIGHT = 1000
MAX_CREATES_PER_MINUTE = 100_000.0
# The steady pace, of creates_per_minute: what arrival jitter needs to never drain the gateway's bucket.
PACE_FRACTION = 0.97
SLOWDOWN_FACTOR = 0.85
MIN_RATE_FRACTION = 0.05
SLOWDOWN_COOLDOWN = 1.0
RECOVERY_DELAY = 2.0
RECOVERY_PER_SECOND = 0.05
_EPSILON = 1e-9


def max_in_flight(value: Any) -> int:
    """The checked ``max_in_flight`` argument: a whole number from 1 to ``MAX_IN_FLIGHT``."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_IN_FLIGHT:
        return value
    raise InvalidParameterError(
        f"max_in_flight must be a whole number from 1 to {MAX_IN_FLIGHT:,}, got {_shown(value)}. It bounds the "
        "unfinished predictions of the batch (and the trigger's size); use for example max_in_flight=100."
    )


def creates_per_minute(value: Any) -> float:
    """The checked ``creates_per_minute`` argument: a finite number above 0, at most 100,000."""
    if isinstance(value, Real) and not isinstance(value, bool) and 0 < float(value) <= MAX_CREATES_PER_MINUTE:
        return float(value)
    raise InvalidParameterError(
        f"creates_per_minute must be a number above 0 and at most {MAX_CREATES_PER_MINUTE:,.0f}, got "
        f"{_shown(value)}. Replicate documents 600 creates a minute; use for example creates_per_minute=600."
    )


def _shown(value: Any) -> str:
    return f"{repr(value)[:80]} ({type(value).__name__})"


class CreatePacer:
    """
    The pace of a batch's creates.

    :param creates_per_minute: the ceiling of the rate; the pace is ``PACE_FRACTION`` of it.
    :param clock: monotonic seconds; tests pass a fake one.
    """

    def __init__(self, creates_per_minute: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = creates_per_minute / 60.0
        self.target = self.limit * PACE_FRACTION
        self.rate = self.target
        self.clock = clock
        self._tokens = 1.0
        self._updated = clock()
        self._last_throttle: float | None = None
        self._last_slowdown: float | None = None
        self.throttles = 0

    @property
    def capacity(self) -> float:
        """Tokens the bucket banks at most: one second's worth, and at least one create."""
        return max(1.0, self.rate)

    def _refill(self) -> None:
        now = self.clock()
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        if self._last_throttle is not None and self.rate < self.target:
            quiet = now - self._last_throttle - RECOVERY_DELAY
            if quiet > 0:
                grow = min(elapsed, quiet) * RECOVERY_PER_SECOND * self.limit
                self.rate = min(self.target, self.rate + grow)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)

    def delay(self) -> float:
        """Seconds to wait before the next create may start (0: now)."""
        self._refill()
        # A hair short of a token (float rounding) is a token: the wait would be lost in the clock.
        return 0.0 if self._tokens >= 1.0 - _EPSILON else (1.0 - self._tokens) / self.rate

    def took(self) -> None:
        """A create was sent."""
        self._refill()
        self._tokens -= 1.0

    def throttled(self, error: object = None) -> None:
        """The gateway answered HTTP 429: slow down by ``SLOWDOWN_FACTOR`` (at most once per ``SLOWDOWN_COOLDOWN``)."""
        self._refill()
        now = self.clock()
        self.throttles += 1
        if self._last_slowdown is None or now - self._last_slowdown >= SLOWDOWN_COOLDOWN:
            self.rate = max(self.limit * MIN_RATE_FRACTION, self.rate * SLOWDOWN_FACTOR)
            self._tokens = min(self._tokens, 0.0)
            self._last_slowdown = now
        self._last_throttle = now

    def resume_at(self, rate: float) -> None:
        """
        Start at the pace an earlier wave slowed to (carried over a deferral), and recover from it.

        The 429 that slowed it came before the wait: recovery starts ``RECOVERY_DELAY`` from
        now, as after a throttle, instead of never.
        """
        if 0 < rate < self.target:
            self.rate = rate
            self._last_throttle = self.clock()

    def per_minute(self) -> float:
        """The current rate, in creates per minute (for the log)."""
        return self.rate * 60.0


def slots(max_in_flight: int, in_flight: int) -> int:
    """How many more predictions may be created now: never below 0."""
    return max(0, max_in_flight - in_flight)


def resume_after(max_in_flight: int, in_flight: int, pending: int) -> int:
    """
    How many predictions must end before the wait hands back to the worker.

    While inputs wait to be created, half of ``max_in_flight`` (so that a wave is worth a
    resume); with none left, all of them.
    """
    if pending <= 0:
        return in_flight
    return max(1, min(in_flight, math.ceil(max_in_flight / 2)))
