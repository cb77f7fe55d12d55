"""
How long a trigger holds its event after its task deferred: a workaround for apache/airflow#72716.

When a task defers, its process exits and the executor reports that try as ``success``. The
worker's supervisor notices the exit up to ``[workers] min_heartbeat_interval`` seconds late
(5 by default: once the task has closed its sockets it sleeps that long before it looks
again), and the scheduler drains the executor's report in its next loop. If the trigger fired
before then and the resumed try (same try number) is already queued or running, Airflow takes
that stale ``success`` for the resumed try dying: it logs "state mismatch" and fails the task.
Airflow 3.2.2 and later ignore the stale report only while the resumed try is still
``scheduled``; the rest is open upstream (3.3.2 included).

So a trigger holds its event until ``min_defer_seconds`` after the deferral, counted from a
wall-clock time taken when the task deferred (it survives a triggerer restart). While it holds,
it keeps polling as usual.
"""

from __future__ import annotations

import math

from airflow_provider_cometapi.exceptions import InvalidParameterError

OPTION = ("cometapi", "min_defer_seconds")
"""The Airflow option: ``[cometapi] min_defer_seconds`` (``AIRFLOW__COMETAPI__MIN_DEFER_SECONDS``)."""
# Past the supervisor's late look: the task process's exit after the defer call, the
# supervisor's last steps (a remote log upload), the executor's report (Celery's result
# backend) and one scheduler loop (1 s idle sleep plus the loop itself): the report must be
# read in a loop before the one that queues the resumed try. The e2e stack, loaded, read it
# up to 6.3 s after the deferral.
MARGIN_SECONDS = 3.0
# A longer hold is a mistake: outputs wait to be stored, and a wait ends at least this late.
MAX_SECONDS = 300.0


def min_defer_seconds() -> float:
    """
    ``[cometapi] min_defer_seconds``; unset, ``[workers] min_heartbeat_interval`` plus 3 s (8 s
    with Airflow's defaults). ``0`` turns the hold off (``dag.test()``, which has no executor,
    or an Airflow with the bug fixed).

    :raises InvalidParameterError: not a number of seconds from 0 to 300.
    """
    from airflow.providers.common.compat.sdk import conf

    value = conf.get(*OPTION, fallback=None)
    if value is None or not str(value).strip():
        return float(conf.getint("workers", "min_heartbeat_interval", fallback=5)) + MARGIN_SECONDS
    return check(value, name="[cometapi] min_defer_seconds")


def check(value: object, *, name: str = "min_defer_seconds") -> float:
    """``value`` as seconds from 0 to ``MAX_SECONDS``; a number or a string of one (a config value)."""
    try:
        seconds = float(value) if isinstance(value, int | float | str) and not isinstance(value, bool) else math.nan
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_SECONDS):
        raise InvalidParameterError(
            f"{name} must be a number of seconds from 0 to {MAX_SECONDS:g}, got {repr(value)[:80]}. "
            "Leave it unset for the default ([workers] min_heartbeat_interval + 3), or 0 to turn the hold off."
        )
    return seconds
