"""
Waiting for a prediction: one status code path for the worker, the triggerer and the sensor.

``PredictionWatch`` holds no I/O. It is told each poll's result, logs progress (status
changes and new log lines, never the whole log again), and decides when the wait is over, with
which outcome. The same outcome, an *event* dict, comes out of the blocking loop on a worker
(``wait_for_prediction``), the async loop in the triggerer (``await_prediction``) and a
sensor's poke, and ``resolve_event`` turns it into the task's result or its failure.

An event is small and JSON-serialisable:

    {"status": "succeeded" | "failed" | "canceled" | "aborted" | "timeout" | "error",
     "prediction_id": "...", "prediction": {...} | None, "message": "..."}
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_cometapi.exceptions import (
    CometAPIError,
    PredictionFailedError,
    PredictionTimeoutError,
)
from airflow_provider_cometapi.models import TERMINAL_STATUSES, UNSUCCESSFUL_STATUSES, Prediction

if TYPE_CHECKING:
    from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
    from airflow_provider_cometapi.retry import LoggerLike

TIMEOUT = "timeout"
ERROR = "error"
EVENT_STATUSES: frozenset[str] = TERMINAL_STATUSES | {TIMEOUT, ERROR}
# Polls in a row that may fail (each after the hook's own retries) before the wait gives up.
MAX_FAILED_POLLS = 3


@dataclass
class PredictionWatch:
    """
    The state of one wait: deadline, progress already logged, failures in a row.

    :param deadline: absolute Unix time after which the wait ends with a ``timeout`` event;
        ``None`` waits as long as the prediction runs.
    :param stream_logs: log the prediction's new log lines at each poll, a record per line
        (else once, at the end, as one record).
    :param log_end: log the end (the terminal status, and without streaming the prediction's
        log); else the caller logs it, in one record with the outcome, from ``end_log``.
    """

    prediction_id: str
    poll_interval: float
    deadline: float | None
    log: LoggerLike
    last_status: str | None = None
    log_offset: int = 0
    failed_polls: int = 0
    # False where the watch does not outlive one poll (a rescheduled sensor): the prediction's log
    # is then written once, when it ends, instead of from the start at every poke.
    stream_logs: bool = True
    # False where the caller logs the outcome itself (the trigger): one record fewer per wait.
    log_end: bool = True
    # The prediction's log when it ended, where ``log_end`` is False and logs are not streamed.
    end_log: str = field(default="", repr=False)
    polls: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if not self.poll_interval > 0:
            raise ValueError(f"poll_interval must be a positive number of seconds, got {self.poll_interval!r}.")

    def observe(self, prediction: Prediction) -> dict[str, Any] | None:
        """Log what is new in ``prediction``; return the final event once it is terminal."""
        self.polls += 1
        self.failed_polls = 0
        if prediction.logs and (self.stream_logs or prediction.is_terminal):
            lines, self.log_offset = prediction.new_log_lines(self.log_offset)[:2]
            if self.stream_logs:
                for line in lines:
                    self.log.info("[%s] %s", prediction.id, line)
            elif lines and self.log_end:
                self.log.info("[%s] %s", prediction.id, "\n".join(lines))
            elif lines:
                # For the caller's one record of the outcome: thousands of waits in a triggerer
                # would otherwise spend more on log records than on polling.
                self.end_log = "\n".join(lines)
        if prediction.status != self.last_status and (self.log_end or not prediction.is_terminal):
            self.log.info(
                "Prediction %s: status %s%s.",
                prediction.id,
                prediction.status,
                "" if prediction.is_known_status else " (a status this provider does not know; still waiting)",
            )
        self.last_status = prediction.status
        if not prediction.is_terminal:
            return None
        return outcome_event(prediction)

    def poll_failed(self, error: CometAPIError) -> dict[str, Any] | None:
        """Tolerate a few transient failures in a row; return an ``error`` event when it persists."""
        self.failed_polls += 1
        if error.transient and self.failed_polls < MAX_FAILED_POLLS:
            self.log.warning(
                "Polling prediction %s failed (%d of %d in a row allowed): %s",
                self.prediction_id,
                self.failed_polls,
                MAX_FAILED_POLLS - 1,
                error,
            )
            return None
        return error_event(self.prediction_id, str(error))

    def next_delay(self) -> float | None:
        """Seconds to sleep before the next poll, or ``None`` when the deadline has passed."""
        interval = self.poll_interval
        if self.polls <= 1 and self.failed_polls == 0:
            # Spread the first sleep (around the interval, so polls per prediction stay the same)
            # so that many waits started together do not poll in lockstep.
            interval *= random.uniform(0.5, 1.5)
        if self.deadline is None:
            return interval
        remaining = self.deadline - time.time()
        return None if remaining <= 0 else min(interval, remaining)

    def timed_out(self) -> dict[str, Any]:
        return {
            "status": TIMEOUT,
            "prediction_id": self.prediction_id,
            "prediction": None,
            "message": f"Prediction {self.prediction_id} did not finish before the deadline "
            f"(last status: {self.last_status or 'not polled'}).",
        }


def outcome_event(prediction: Prediction) -> dict[str, Any]:
    """The event for a terminal prediction."""
    if prediction.succeeded:
        message = f"Prediction {prediction.id} succeeded with {len(prediction.output)} output(s)."
    else:
        message = f"Prediction {prediction.id} {prediction.status}: {prediction.error or 'no error message given'}"
    return {
        "status": prediction.status,
        "prediction_id": prediction.id,
        # Inline (data:) outputs are left out of the event; the task fetches them when it resumes.
        "prediction": prediction.to_dict(shorten_outputs=True),
        "outputs_shortened": prediction.has_inline_outputs,
        "message": message,
    }


def error_event(prediction_id: str, message: str) -> dict[str, Any]:
    return {"status": ERROR, "prediction_id": prediction_id, "prediction": None, "message": message}


def wait_for_prediction(hook: CometAPIHook, watch: PredictionWatch) -> dict[str, Any]:
    """
    Poll on the worker (blocking) until the prediction ends or the deadline passes.

    Every caller has just seen the prediction (the create answer, a sensor's first poke), so the
    loop sleeps before its first poll.
    """
    while True:
        delay = watch.next_delay()
        if delay is None:
            return watch.timed_out()
        time.sleep(delay)
        try:
            event = watch.observe(hook.get_prediction(watch.prediction_id))
        except CometAPIError as error:
            event = watch.poll_failed(error)
        if event is not None:
            return event


async def await_prediction(hook: CometAPIHook, watch: PredictionWatch) -> dict[str, Any]:
    """
    The same loop as ``wait_for_prediction``, for the triggerer's event loop.

    Sleeping first also keeps a trigger from firing the instant its task deferred, before the
    executor has reported the deferral: Airflow 3.3 can then mark the resumed task failed
    ("state changed externally", apache/airflow#72716).
    """
    while True:
        delay = watch.next_delay()
        if delay is None:
            return watch.timed_out()
        await asyncio.sleep(delay)
        try:
            event = watch.observe(await hook.aget_prediction(watch.prediction_id))
        except CometAPIError as error:
            event = watch.poll_failed(error)
        if event is not None:
            return event


def resolve_event(event: Any, hook: CometAPIHook) -> dict[str, Any]:
    """
    The task's result for an event: the final prediction dict, or the matching error raised.

    Everything is read from the event, never from the task object, because a task resumed
    after deferral is a fresh object. Only outputs left out of the event (``data:`` URIs) are
    fetched again with ``hook``.
    """
    if not isinstance(event, Mapping) or event.get("status") not in EVENT_STATUSES:
        raise CometAPIError(
            f"Received an unexpected event while waiting for a prediction: {event!r}. This is a bug or a "
            "trigger from another provider version; clear the task to wait again."
        )
    status, prediction_id = event["status"], str(event.get("prediction_id") or "?")
    message = str(event.get("message") or f"Prediction {prediction_id} ended {status}.")
    if status == "succeeded":
        if event.get("outputs_shortened"):
            return hook.get_prediction(prediction_id).to_dict()
        prediction = event.get("prediction")
        if not isinstance(prediction, Mapping):
            raise CometAPIError(f"The event for prediction {prediction_id} carries no prediction: {event!r}.")
        return dict(prediction)
    if status in UNSUCCESSFUL_STATUSES:
        raise PredictionFailedError(message, prediction_id=prediction_id, status=status)
    if status == TIMEOUT:
        raise PredictionTimeoutError(message, prediction_id=prediction_id)
    raise CometAPIError(message)
