"""
Waiting for a prediction: one status code path for the worker, the triggerer and the sensor.

``PredictionWatch`` holds no I/O. It is told each poll's result, logs progress (status
changes and new log lines, never the whole log again), and decides when the wait is over, with
which outcome. The same outcome, a ``PredictionEvent``, comes out of the blocking loop on a
worker (``wait_for_prediction``), the async loop in the triggerer (``await_prediction``) and a
sensor's poke, and ``resolve_event`` turns it into the task's result or its failure.

Every event is built by ``_event`` and read back only by ``read_event``: a trigger's event
is kept in Airflow's database and read by the resumed task, possibly of a later release.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict, cast

from airflow_provider_cometapi import metrics
from airflow_provider_cometapi.cost import cost_of
from airflow_provider_cometapi.exceptions import (
    CometAPIError,
    PredictionFailedError,
    PredictionTimeoutError,
    PredictionWaitError,
    UnexpectedEventError,
)
from airflow_provider_cometapi.models import (
    MAX_LOG_CHARS,
    MAX_LOG_LINES,
    TERMINAL_STATUSES,
    UNSUCCESSFUL_STATUSES,
    NewLogLines,
    Prediction,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
    from airflow_provider_cometapi.retry import LoggerLike

TIMEOUT: Final = "timeout"
ERROR: Final = "error"
EVENT_STATUSES: frozenset[str] = TERMINAL_STATUSES | {TIMEOUT, ERROR}
EVENT_VERSION = 1
# Polls in a row that may fail (each after the hook's own retries) before the wait gives up.
MAX_FAILED_POLLS = 3
# Cancelling has its own short deadline: a gateway that does not answer must not hold a task
# (or a trigger's on_kill, which Airflow gives a bounded time) long after its wait ended.
CANCEL_TIMEOUT = 10.0
# The XCom a prediction that ended failed, canceled or aborted leaves before the task fails
# (``record_failure``), whether the operator or the sensor waited: what the Images tab shows in
# place of its image.
FAILED_PREDICTION_XCOM_KEY = "failed_prediction"
# The gateway's error text is untrusted and may be long: the record keeps this much of it.
MAX_RECORDED_ERROR_CHARS = 1000
# A request cut by the wait's deadline may end a hair before it by the clock read afterwards.
_DEADLINE_SLACK = 0.1
# In LogMode.COLLECT, a wait that lasts says how it is doing this often (seconds), and only then.
PROGRESS_EVERY = 60.0

EventStatus = Literal["succeeded", "failed", "canceled", "aborted", "timeout", "error"]


class PredictionEvent(TypedDict):
    """
    The outcome of a wait: the one event a ``PredictionTrigger`` fires, and what the worker's
    wait and a sensor's poke end with.

    Small and JSON-serialisable, since Airflow keeps a trigger's event in its database: inline
    (``data:``) outputs are left out. Events of releases before version 1 have no ``v`` and no
    ``outputs_shortened`` (read as ``False``); they are read as version 1.
    """

    v: int
    """The version of this shape: 1."""
    status: EventStatus
    """The prediction's terminal status (``succeeded``, ``failed``, ``canceled``, ``aborted``);
    ``timeout`` when the deadline passed first; ``error`` when polling kept failing."""
    prediction_id: str
    """The prediction waited for."""
    prediction: dict[str, Any] | None
    """The final prediction as a JSON dict (no logs, ``data:`` outputs shortened), for the four
    prediction statuses; ``None`` for ``timeout`` and ``error``."""
    outputs_shortened: bool
    """Whether ``data:`` outputs were shortened: the resumed task then fetches the prediction again."""
    message: str
    """One sentence for the task log and the task's error."""


class LogMode(Enum):
    """How a ``PredictionWatch`` writes the prediction's own log and its status changes."""

    STREAM = "stream"
    """New lines at every poll, one record each (the worker's wait, a sensor in poke mode)."""
    AT_END = "at_end"
    """The log once, in one record, when the prediction ends (a rescheduled sensor: a fresh watch per poke)."""
    COLLECT = "collect"
    """Nothing at the end: the log is kept in ``end_log``, and the statuses seen in
    ``statuses``, for the caller to write with the outcome in one record (the trigger:
    thousands of waits in one triggerer, where records cost more than polls). A wait longer
    than ``PROGRESS_EVERY`` says how it is doing once per that many seconds."""


@dataclass
class PredictionWatch:
    """
    The state of one wait: deadline, progress already logged, failures in a row.

    Its arguments are checked by the operator, sensor and trigger that make it
    (``airflow_provider_cometapi.parameters``), when the DAG is parsed.

    :param deadline: absolute Unix time after which the wait ends with a ``timeout`` event;
        every poll is given it, so no request outlives it. ``None`` waits as long as the
        prediction runs.
    :param log_mode: how the prediction's log is written (``LogMode``).
    """

    prediction_id: str
    poll_interval: float
    deadline: float | None
    log: LoggerLike
    log_mode: LogMode = LogMode.STREAM
    last_status: str | None = None
    log_offset: int = 0
    failed_polls: int = 0
    # Why the last poll failed, while it is the last poll: a timeout says so.
    last_error: str | None = field(default=None, repr=False)
    # The prediction's log when it ended, and the statuses it went through, in LogMode.COLLECT.
    end_log: str = field(default="", repr=False)
    statuses: list[str] = field(default_factory=list, repr=False)
    polls: int = field(default=0, repr=False)
    _next_progress: float = field(default=0.0, repr=False)
    # When the wait began (monotonic) and the model last seen: for the metrics at its end.
    started: float = field(default_factory=time.monotonic, repr=False)
    model: str | None = field(default=None, repr=False)

    def observe(self, prediction: Prediction) -> PredictionEvent | None:
        """Log what is new in ``prediction``; return the final event once it is terminal."""
        self.polls += 1
        self.failed_polls = 0
        self.last_error = None
        terminal = prediction.is_terminal
        if prediction.logs and (self.log_mode is LogMode.STREAM or terminal):
            self._log_new_lines(prediction)
        if self.log_mode is LogMode.COLLECT:
            self._collect_status(prediction, terminal)
        elif prediction.status != self.last_status:
            self._log_status(prediction)
        self.last_status = prediction.status
        self.model = prediction.model
        return outcome_event(prediction) if terminal else None

    def _log_status(self, prediction: Prediction, since: str = "") -> None:
        self.log.info(
            "Prediction %s: status %s%s%s.",
            prediction.id,
            prediction.status,
            since,
            "" if prediction.is_known_status else " (a status this provider does not know; still waiting)",
        )

    def _collect_status(self, prediction: Prediction, terminal: bool) -> None:
        if prediction.status != self.last_status:
            self.statuses.append(prediction.status)
            if not prediction.is_known_status:  # rare, and worth seeing while it lasts
                self._log_status(prediction)
        if terminal:
            return
        now = time.monotonic()
        if not self._next_progress:
            self._next_progress = now + PROGRESS_EVERY
        elif now >= self._next_progress:
            self._next_progress = now + PROGRESS_EVERY
            self._log_status(prediction, f" after {self.polls} polls")

    def _log_new_lines(self, prediction: Prediction) -> None:
        new = prediction.new_log_lines(self.log_offset)
        self.log_offset = new.offset
        note = dropped_log_note(new)
        if self.log_mode is LogMode.STREAM:
            # At most one note and MAX_LOG_LINES records per poll, however much the gateway sends.
            if note:
                self.log.info("[%s] %s", prediction.id, note)
            for line in new.lines:
                self.log.info("[%s] %s", prediction.id, line)
            return
        text = "\n".join([note, *new.lines] if note else new.lines)
        if not text:
            return
        if self.log_mode is LogMode.AT_END:
            self.log.info("[%s] %s", prediction.id, text)
        else:
            self.end_log = text

    def poll_failed(self, error: CometAPIError) -> PredictionEvent | None:
        """
        Tolerate a few transient failures in a row; return an ``error`` event when it persists.

        A transient failure once the deadline has passed (the request was cut by it, or its
        retries ran into it) ends the wait on time: the ``timeout`` event, which cancels.
        """
        self.failed_polls += 1
        self.last_error = str(error)
        if error.transient and self.deadline_passed():
            return self.timed_out()
        if error.transient and self.failed_polls < MAX_FAILED_POLLS:
            self.log.warning(
                "Polling prediction %s failed (%d of %d in a row allowed): %s",
                self.prediction_id,
                self.failed_polls,
                MAX_FAILED_POLLS - 1,
                error,
            )
            return None
        in_a_row = f" {self.failed_polls} times in a row" if self.failed_polls > 1 else ""
        return error_event(self.prediction_id, f"Polling prediction {self.prediction_id} failed{in_a_row}: {error}")

    def deadline_passed(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline - _DEADLINE_SLACK

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

    def timed_out(self) -> PredictionEvent:
        """The ``timeout`` event: the deadline passed before the prediction ended."""
        failure = f"; the last poll failed: {self.last_error}" if self.last_error else ""
        return _event(
            TIMEOUT,
            self.prediction_id,
            f"Prediction {self.prediction_id} did not finish before the deadline "
            f"(last status: {self.last_status or 'not polled'}{failure}).",
        )


def dropped_log_note(new: NewLogLines) -> str:
    """One line saying how much of the prediction's log was left out of the task log, or ``""``."""
    counts = ((new.dropped_chars, "characters"), (new.dropped_lines, "lines"))
    left_out = " and ".join(f"{count:,} {unit}" for count, unit in counts if count)
    if not left_out:
        return ""
    return (
        f"{left_out} of the prediction's log left out: the task log gets at most its newest "
        f"{MAX_LOG_LINES} lines per poll, from its newest {MAX_LOG_CHARS // 1024} KiB."
    )


def _event(
    status: EventStatus,
    prediction_id: str,
    message: str,
    *,
    prediction: dict[str, Any] | None = None,
    outputs_shortened: bool = False,
) -> PredictionEvent:
    return {
        "v": EVENT_VERSION,
        "status": status,
        "prediction_id": prediction_id,
        "prediction": prediction,
        "outputs_shortened": outputs_shortened,
        "message": message,
    }


def outcome_event(prediction: Prediction) -> PredictionEvent:
    """The event for a terminal prediction."""
    if prediction.succeeded:
        message = f"Prediction {prediction.id} succeeded with {len(prediction.output)} output(s)."
    else:
        message = f"Prediction {prediction.id} {prediction.status}: {prediction.error or 'no error message given'}"
    return _event(
        cast("EventStatus", prediction.status),
        prediction.id,
        message,
        # Inline (data:) outputs are left out of the event; the task fetches them when it resumes.
        prediction=prediction.to_dict(shorten_outputs=True),
        outputs_shortened=prediction.has_inline_outputs,
    )


def error_event(prediction_id: str, message: str) -> PredictionEvent:
    """The event for a wait that broke: ``message`` says why."""
    return _event(ERROR, prediction_id, message)


def wait_for_prediction(hook: CometAPIHook, watch: PredictionWatch) -> PredictionEvent:
    """
    Poll on the worker (blocking) until the prediction ends or the deadline passes.

    Every caller has just seen the prediction (the create answer, a sensor's first poke), so the
    loop sleeps before its first poll.
    """
    while True:
        delay = watch.next_delay()
        if delay is None:
            return report_end(watch, watch.timed_out())
        time.sleep(delay)
        prediction = None
        try:
            prediction = hook.get_prediction(watch.prediction_id, deadline=watch.deadline)
            event = watch.observe(prediction)
        except CometAPIError as error:
            event = watch.poll_failed(error)
        if event is not None:
            return report_end(watch, event, prediction, hook)


async def await_prediction(hook: CometAPIHook, watch: PredictionWatch) -> PredictionEvent:
    """
    The same loop as ``wait_for_prediction``, for the triggerer's event loop.

    Sleeping first also keeps a trigger from firing the instant its task deferred, before the
    executor has reported the deferral: Airflow 3.3 can then mark the resumed task failed
    ("state changed externally", apache/airflow#72716).
    """
    while True:
        delay = watch.next_delay()
        if delay is None:
            return report_end(watch, watch.timed_out())
        await asyncio.sleep(delay)
        prediction = None
        try:
            prediction = await hook.aget_prediction(watch.prediction_id, deadline=watch.deadline)
            event = watch.observe(prediction)
        except CometAPIError as error:
            event = watch.poll_failed(error)
        if event is not None:
            return report_end(watch, event, prediction, hook)


def report_end(
    watch: PredictionWatch,
    event: PredictionEvent,
    prediction: Prediction | None = None,
    hook: CometAPIHook | None = None,
) -> PredictionEvent:
    """
    The one place a wait's metrics are sent (``airflow_provider_cometapi.metrics``), and ``event``.

    Called once, when the wait ends: the prediction's end when it ended, else the ``timeout`` or
    ``error``; never per poll. ``hook``'s connection prices, once it has read them, give the cost.
    """
    waited = time.monotonic() - watch.started
    if prediction is not None and prediction.is_terminal:
        report_prediction_end(prediction, hook, waited, model=watch.model)
    else:
        metrics.wait_ended_without_end(event["status"], watch.model, waited)
    return event


def report_prediction_end(
    prediction: Prediction, hook: CometAPIHook | None, waited_s: float | None = None, *, model: str | None = None
) -> None:
    """
    ``metrics.prediction_ended`` for a wait that saw ``prediction`` end (a single wait, or one of a
    batch's): its cost from ``hook``'s connection prices once the hook has read them (no lookup).
    """
    settings = hook.looked_up_settings if hook is not None else None
    cost = None if settings is None else cost_of(prediction, settings.prices, model=model)
    currency = None if settings is None else settings.prices.currency
    metrics.prediction_ended(prediction, waited_s, cost=cost, currency=currency)


def read_event(event: object) -> PredictionEvent:
    """
    ``event`` checked to be one of ours, in this release's shape (older events are upgraded).

    :raises UnexpectedEventError: not a mapping, an unknown version or status, no prediction id,
        or fields of the wrong type.
    """
    if not isinstance(event, Mapping):
        raise _unexpected(event, "it is not a mapping")
    version = event.get("v", EVENT_VERSION)  # events of releases before the version key
    status, prediction_id = event.get("status"), event.get("prediction_id")
    prediction, shortened = event.get("prediction"), event.get("outputs_shortened", False)
    message = event.get("message")
    if version != EVENT_VERSION:
        raise _unexpected(event, f"its version {version!r} is not {EVENT_VERSION} (a newer provider release made it?)")
    if status not in EVENT_STATUSES:
        raise _unexpected(event, f"its status {status!r} is not one of {', '.join(sorted(EVENT_STATUSES))}")
    if not isinstance(prediction_id, str) or not prediction_id:
        raise _unexpected(event, "it names no prediction")
    if prediction is not None and not isinstance(prediction, Mapping):
        raise _unexpected(event, "its prediction is not a mapping")
    if status == "succeeded" and prediction is None and not shortened:
        raise _unexpected(event, f"it carries no prediction for succeeded prediction {prediction_id}")
    if not isinstance(shortened, bool) or not isinstance(message, str | None):
        raise _unexpected(event, "its outputs_shortened or message has the wrong type")
    return _event(
        cast("EventStatus", status),
        prediction_id,
        message or f"Prediction {prediction_id} ended {status}.",
        prediction=None if prediction is None else dict(prediction),
        outputs_shortened=shortened,
    )


def _unexpected(event: object, why: str) -> UnexpectedEventError:
    shown = repr(event)
    return UnexpectedEventError(
        f"Received an unexpected event while waiting for a prediction ({why}): "
        f"{shown[:300] + '...' if len(shown) > 300 else shown}. This is a bug or a trigger from another "
        "provider version; clear the task to wait again."
    )


_RECORDED_FIELDS = {"model": 200, "created_at": 64, "started_at": 64, "completed_at": 64}


def failure_record(prediction_id: str, status: str, prediction: Mapping[str, Any] | None) -> dict[str, Any]:
    """
    What XCom keeps of a prediction that ended unsuccessfully: small and bounded, with nothing
    from its input, outputs or log (where a URL's signature or a secret could be).
    """
    prediction = prediction or {}
    error = prediction.get("error")
    record: dict[str, Any] = {
        "id": prediction_id,
        "status": status,
        "error": None if error in (None, "") else _cut(str(error), MAX_RECORDED_ERROR_CHARS),
    }
    for key, limit in _RECORDED_FIELDS.items():
        if isinstance(value := prediction.get(key), str) and value:
            record[key] = value[:limit]
    return record


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def record_failure(context: Context, event: object, log: LoggerLike) -> None:
    """
    Push the ``failed_prediction`` XCom for an event of a prediction that ended unsuccessfully.

    Best effort: the prediction's own error is what fails the task, so a record that cannot be
    pushed is only logged.
    """
    try:
        checked = read_event(event)
        record = failure_record(checked["prediction_id"], checked["status"], checked["prediction"])
        context["ti"].xcom_push(key=FAILED_PREDICTION_XCOM_KEY, value=record)
    except Exception as error:
        log.warning("Could not record the failed prediction for the Images tab: %s", error)


def resolve_event(event: object, hook: CometAPIHook) -> dict[str, Any]:
    """
    The task's result for an event: the final prediction dict, or the matching error raised.

    Everything is read from the event, never from the task object, because a task resumed
    after deferral is a fresh object. Only outputs left out of the event (``data:`` URIs) are
    fetched again with ``hook``.

    :raises PredictionFailedError: the prediction ended ``failed``, ``canceled`` or ``aborted``.
    :raises PredictionTimeoutError: the deadline passed first (``timeout``).
    :raises PredictionWaitError: polling kept failing (``error``); the prediction may still run.
    :raises UnexpectedEventError: the event is not one of ours (``read_event``).
    """
    checked = read_event(event)
    status, prediction_id, message = checked["status"], checked["prediction_id"], checked["message"]
    if status == "succeeded":
        prediction = checked["prediction"]
        if checked["outputs_shortened"] or prediction is None:
            return hook.get_prediction(prediction_id).to_dict()
        return prediction
    if status in UNSUCCESSFUL_STATUSES:
        raise PredictionFailedError(message, prediction_id=prediction_id, status=status)
    if status == TIMEOUT:
        raise PredictionTimeoutError(message, prediction_id=prediction_id)
    raise PredictionWaitError(message, prediction_id=prediction_id)
