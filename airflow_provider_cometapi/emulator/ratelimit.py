"""The per-key create rate limit: a token bucket, as Replicate throttles creates.

Replicate documents 600 creates a minute, with "short bursts" above it allowed before a 429.
A token bucket per key is that shape: it refills at ``per_minute / 60`` tokens a second up to
``burst`` tokens, and every create request that passed auth takes one. A request finding the
bucket empty is answered 429 with ``Retry-After`` (whole seconds, as HTTP writes it) until a
token is back. Only the create routes consult it; polls never do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

_EPSILON = 1e-9


@dataclass
class _Bucket:
    tokens: float
    at: float


class CreateLimiter:
    """
    Create requests per key and minute; ``per_minute=None`` means no limit (the default).

    :param per_minute: creates a minute each key may sustain.
    :param burst: tokens the bucket holds, the creates a key may send at once; default one
        second's worth (at least 1).
    """

    def __init__(self, per_minute: float | None = None, burst: int | None = None) -> None:
        self.per_minute: float | None = None
        self.burst = 1
        self.throttled = 0
        self._buckets: dict[str, _Bucket] = {}
        self.configure(per_minute, burst)

    def configure(self, per_minute: float | None, burst: int | None = None) -> None:
        """Set the limit (``None``: none); every key starts again with a full bucket."""
        check_limit(per_minute, burst)
        self.per_minute = None if per_minute is None else float(per_minute)
        self.burst = burst if burst is not None else default_burst(per_minute)
        self._buckets.clear()

    def take(self, key: str, now: float) -> float | None:
        """One create for ``key`` at monotonic ``now``: ``None`` if allowed, else seconds until it would be."""
        if self.per_minute is None:
            return None
        rate = self.per_minute / 60.0
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * rate)
            bucket.at = now
        if bucket.tokens >= 1.0 - _EPSILON:  # a token due now is not lost to rounding
            bucket.tokens = max(0.0, bucket.tokens - 1.0)
            return None
        self.throttled += 1
        return (1.0 - bucket.tokens) / rate

    def to_dict(self) -> dict[str, Any]:
        return {"per_minute": self.per_minute, "burst": self.burst if self.per_minute is not None else None}


def default_burst(per_minute: float | None) -> int:
    return 1 if per_minute is None else max(1, math.floor(per_minute / 60.0))


def check_limit(per_minute: Any, burst: Any) -> None:
    """Raise ``ValueError`` naming what is wrong with a limit (``per_minute`` ``None`` is no limit)."""
    if per_minute is not None and (
        isinstance(per_minute, bool) or not isinstance(per_minute, int | float) or not 0 < per_minute < math.inf
    ):
        raise ValueError("per_minute must be a positive number of creates a minute, or null for no limit")
    if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int) or burst < 1):
        raise ValueError("burst must be a whole number >= 1")


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, rounded up and at least 1: a client waiting it finds a token."""
    return str(max(1, math.ceil(seconds)))
