"""
The checks of the waiting arguments, made when the DAG file is parsed.

``CreatePredictionOperator``, ``PredictionSensor`` and ``PredictionTrigger`` call these in their
constructors, so a ``timeout`` of 0 or NaN fails at DAG parse, before any prediction is created
(and paid for), instead of creating one and then cancelling it or waiting forever. None of these
arguments is templated, which is what makes the early check possible: keep it so.
"""

from __future__ import annotations

import math
from datetime import timedelta
from numbers import Real
from typing import Any

from airflow_provider_cometapi.api import MAX_PREFER_WAIT
from airflow_provider_cometapi.exceptions import InvalidParameterError

# Longer waits are a mistake, and far longer ones overflow timedelta and time.sleep.
MAX_SECONDS = 365 * 24 * 3600.0


def duration(name: str, value: Any, *, allow_zero: bool = False, example: float = 300) -> float:
    """
    ``value`` (seconds or a ``timedelta``) as seconds, if it is a duration a wait can use.

    :param name: the argument, as the DAG author wrote it (named in the message).
    :param allow_zero: accept 0 (an Airflow sensor's own ``poke_interval`` rule).
    :param example: a sensible value, shown in the message.
    :raises InvalidParameterError: not a number or timedelta, NaN, infinite, negative, 0 (unless
        ``allow_zero``) or over ``MAX_SECONDS``.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, Real) and not isinstance(value, bool):
        seconds = float(value)
    else:
        seconds = math.nan
    usable = math.isfinite(seconds) and (seconds >= 0 if allow_zero else seconds > 0) and seconds <= MAX_SECONDS
    if not usable:
        kind = "non-negative" if allow_zero else "positive"
        raise InvalidParameterError(
            f"{name} must be a {kind} number of seconds or a timedelta, finite and at most "
            f"{MAX_SECONDS / 86400:g} days, got {_shown(value)}. Use for example {name}={example:g} or "
            f"{name}=timedelta(seconds={example:g})."
        )
    return seconds


def poll_interval(value: Any, *, name: str = "poll_interval") -> float:
    """Seconds between two status checks of a prediction."""
    return duration(name, value, example=5)


def deadline(value: Any) -> float | None:
    """A trigger's absolute deadline (Unix time), or ``None`` for none; one already passed is fine."""
    if value is None:
        return None
    if isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise InvalidParameterError(
        f"deadline must be an absolute Unix time (a finite number, as time.time() gives) or None, got {_shown(value)}."
    )


def prefer_wait(value: Any) -> int | None:
    """``None`` (no holding), or the whole seconds, 1-60, the gateway may hold the create call."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_PREFER_WAIT):
        return value
    raise InvalidParameterError(
        f"prefer_wait must be a whole number of seconds from 1 to {MAX_PREFER_WAIT}, or None, got {_shown(value)}. "
        f"Use for example prefer_wait=30, or leave it unset to poll from the start."
    )


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{text[:80]}... ({type(value).__name__})" if len(text) > 80 else f"{text} ({type(value).__name__})"


def cancel_after(value: Any) -> int | None:
    """``None`` (off), or the whole seconds (rounded up) after which the gateway should give up on a prediction."""
    if value is None:
        return None
    return math.ceil(duration("cancel_after", value, example=600))
