"""
When the unsuccessful inputs of a batch fail its task, and which are created again.

``max_failed`` is a count (``3``) or a fraction of the inputs (``0.01``) that may end
unsuccessfully (failed, canceled, aborted, rejected, uncertain) with the task still succeeding.
``retry_failed`` is how many more predictions an input whose prediction failed, was canceled
by the gateway or aborted may get, over the life of its manifest; so a batch never pays for more
than ``(1 + retry_failed)`` predictions per input. Not created again: an input the gateway
rejected (HTTP 422: it would be rejected again), an uncertain create (it may exist), and a
prediction this task cancelled itself (timeout, kill).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import TYPE_CHECKING, Any

from airflow_provider_cometapi.exceptions import InvalidParameterError
from airflow_provider_cometapi.models import UNSUCCESSFUL_STATUSES

if TYPE_CHECKING:
    from airflow_provider_cometapi.batch.manifest import ManifestEntry

MAX_RETRY_FAILED = 10


@dataclass(frozen=True)
class FailurePolicy:
    """:param max_failed: a whole count >= 0, or a fraction from 0 to 1 (exclusive) of the inputs."""

    max_failed: int | float = 0
    retry_failed: int = 0

    @classmethod
    def parse(cls, max_failed: Any, retry_failed: Any) -> FailurePolicy:
        """The checked arguments. :raises InvalidParameterError: a value that cannot work."""
        count = isinstance(max_failed, int) and not isinstance(max_failed, bool) and max_failed >= 0
        fraction = (
            isinstance(max_failed, Real)
            and not isinstance(max_failed, bool | int)
            and math.isfinite(float(max_failed))
            and 0.0 <= float(max_failed) < 1.0
        )
        if not (count or fraction):
            raise InvalidParameterError(
                f"max_failed must be a whole number of inputs (>= 0) or a fraction from 0 to 1 (below 1) of them, "
                f"got {repr(max_failed)[:80]} ({type(max_failed).__name__}). Use for example max_failed=5 or "
                "max_failed=0.01 (1 % of the inputs)."
            )
        whole = isinstance(retry_failed, int) and not isinstance(retry_failed, bool)
        if not (whole and 0 <= retry_failed <= MAX_RETRY_FAILED):
            raise InvalidParameterError(
                f"retry_failed must be a whole number from 0 to {MAX_RETRY_FAILED}, got {repr(retry_failed)[:80]} "
                f"({type(retry_failed).__name__}). It bounds the new predictions per failed input; use for example "
                "retry_failed=1."
            )
        return cls(max_failed=max_failed if count else float(max_failed), retry_failed=retry_failed)

    def allowed(self, total: int) -> int:
        """Unsuccessful inputs the task tolerates out of ``total``."""
        if isinstance(self.max_failed, int):
            return self.max_failed
        return math.floor(self.max_failed * total)

    def exceeded(self, failed: int, total: int) -> bool:
        return failed > self.allowed(total)

    def may_retry(self, entry: ManifestEntry) -> bool:
        """Whether ``entry``'s unsuccessful prediction is followed by a new one."""
        return (
            entry.status in UNSUCCESSFUL_STATUSES
            and entry.prediction_id is not None
            and not entry.cancelled
            and entry.attempts < 1 + self.retry_failed
        )

    def describe(self, total: int) -> str:
        if isinstance(self.max_failed, int):
            return f"max_failed={self.max_failed}"
        return f"max_failed={self.max_failed:g} ({self.allowed(total):,} of {total:,} inputs)"
