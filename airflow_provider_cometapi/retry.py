"""
The one retry policy, used by the sync and async paths of the hook alike.

Idempotent calls (GET) are retried on every transient fault: HTTP 429, 5xx, 524, gateway
pages, timeouts and connection errors. Calls that may cost money (creating a prediction) are
retried only where the server surely did nothing: HTTP 429 and a connection that was never
established. A timeout or a reset after the request went out is never retried for a create,
because the prediction may exist already. Waits grow exponentially with jitter, follow the
server's ``Retry-After`` advice, and stay within a bounded number of attempts and seconds.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import tenacity

from airflow_provider_cometapi.exceptions import CometAPIError, RateLimitedError

if TYPE_CHECKING:
    from airflow_provider_cometapi.api import ApiRequest

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """
    :param max_attempts: attempts in all, the first included.
    :param max_elapsed: seconds from the first attempt after which no new attempt starts;
        a wait that would end past it is not taken.
    :param backoff_base: the first wait, doubled at each retry (with jitter) up to ``backoff_max``.
    :param max_retry_after: the longest ``Retry-After`` honoured; longer advice ends the retries.
    :param on_throttled: called with each HTTP 429 that is about to be retried, before the wait
        (the batch operator's pacer slows down on it). It must not raise or block.
    """

    max_attempts: int = 5
    max_elapsed: float = 90.0
    backoff_base: float = 1.0
    backoff_max: float = 20.0
    max_retry_after: float = 60.0
    on_throttled: Callable[[RateLimitedError], None] | None = field(default=None, compare=False, repr=False)

    def should_retry(self, error: BaseException, *, idempotent: bool) -> bool:
        if not isinstance(error, CometAPIError):
            return False
        return error.nothing_created or (idempotent and error.transient)

    def wait_seconds(self, attempt_number: int, error: BaseException | None) -> float:
        """How long to wait after failed attempt ``attempt_number`` (1-based)."""
        advised = getattr(error, "retry_after", None)
        if isinstance(advised, int | float):
            # Honour the server, plus a little jitter so throttled clients do not return together.
            return float(advised) + random.uniform(0, 0.1 * max(float(advised), 1.0))
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** (attempt_number - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _tenacity_kwargs(self, request: ApiRequest, log: LoggerLike) -> dict[str, Any]:
        idempotent = request.idempotent

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            return self.wait_seconds(state.attempt_number, error)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            sleep = state.next_action.sleep if state.next_action else 0.0
            if self.on_throttled is not None and isinstance(error, RateLimitedError):
                self.on_throttled(error)
            log.warning(
                "%s Retrying in %.1fs (attempt %d of %d).",
                error,
                sleep,
                state.attempt_number + 1,
                self.max_attempts,
            )

        return {
            "retry": tenacity.retry_if_exception(lambda error: self.should_retry(error, idempotent=idempotent)),
            "stop": (
                tenacity.stop_after_attempt(self.max_attempts)
                | tenacity.stop_before_delay(self.max_elapsed)
                | _StopOnLongAdvice(self.max_retry_after)
            ),
            "wait": wait,
            "before_sleep": before_sleep,
            "reraise": True,
        }

    def call(
        self,
        request: ApiRequest,
        log: Callable[[], LoggerLike],
        attempt: Callable[[], T],
        *,
        deadline: float | None = None,
    ) -> T:
        """
        ``attempt()`` under this policy: tried once, and only a retryable failure builds the loop.

        Nearly every call succeeds the first time; the tenacity machinery costs more than a
        poll's own work, so it is set up only then. The failed first attempt counts as attempt 1
        and its time against ``max_elapsed``, exactly as in ``retrying``. ``log`` returns the
        logger for the retries, asked for only then. ``deadline`` (absolute Unix time) shortens
        ``max_elapsed`` so that no retry waits past it.
        """
        started = time.monotonic()
        try:
            return attempt()
        except Exception as error:
            if not self._retry_after(error, request):
                raise
            first = error
        replayed = [first]

        def again() -> T:
            if replayed:
                raise replayed.pop()
            return attempt()

        return self._rest(started, deadline).retrying(request, log())(again)

    async def acall(
        self,
        request: ApiRequest,
        log: Callable[[], LoggerLike],
        attempt: Callable[[], Awaitable[T]],
        *,
        deadline: float | None = None,
    ) -> T:
        """``call`` for a coroutine function: the same policy, the same single first try."""
        started = time.monotonic()
        try:
            return await attempt()
        except Exception as error:
            if not self._retry_after(error, request):
                raise
            first = error
        replayed = [first]

        async def again() -> T:
            if replayed:
                raise replayed.pop()
            return await attempt()

        return await self._rest(started, deadline).async_retrying(request, log())(again)

    def _retry_after(self, error: BaseException, request: ApiRequest) -> bool:
        return self.max_attempts > 1 and self.should_retry(error, idempotent=request.idempotent)

    def _rest(self, started: float, deadline: float | None) -> RetryPolicy:
        """This policy with the time the first attempt took already spent, ending by ``deadline``."""
        left = self.max_elapsed - (time.monotonic() - started)
        if deadline is not None:
            left = min(left, deadline - time.time())
        return replace(self, max_elapsed=max(0.0, left))

    def retrying(self, request: ApiRequest, log: LoggerLike) -> tenacity.Retrying:
        """A tenacity loop for a blocking call: ``for attempt in policy.retrying(...)``."""
        return tenacity.Retrying(**self._tenacity_kwargs(request, log))

    def async_retrying(self, request: ApiRequest, log: LoggerLike) -> tenacity.AsyncRetrying:
        """The same loop for a coroutine: ``async for attempt in policy.async_retrying(...)``."""
        return tenacity.AsyncRetrying(**self._tenacity_kwargs(request, log))


class _StopOnLongAdvice(tenacity.stop.stop_base):
    """Give up when the server asks for a longer pause than we are willing to take."""

    def __init__(self, max_retry_after: float) -> None:
        self.max_retry_after = max_retry_after

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        advised = getattr(error, "retry_after", None)
        return isinstance(advised, int | float) and advised > self.max_retry_after


class LoggerLike(Protocol):
    """The part of a logger this package uses: stdlib and Airflow's structlog loggers both fit."""

    def info(self, msg: Any, /, *args: Any, **kwargs: Any) -> Any: ...

    def warning(self, msg: Any, /, *args: Any, **kwargs: Any) -> Any: ...
