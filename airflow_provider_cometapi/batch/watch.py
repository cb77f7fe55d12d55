"""
Waiting for many predictions at once: one code path for the triggerer and the worker.

``BatchWatch`` holds no I/O. It is told each poll's result and decides when the wait hands back
to the worker, with a ``BatchEvent``: once enough predictions ended for the next wave of creates
(``resume_after``), once finished outputs have waited ``flush_after`` seconds to be stored, once
all ended, at the deadline, or when polling keeps failing. ``await_batch`` is the loop:
``PredictionBatchTrigger`` runs it in the triggerer, the batch operator with ``asyncio.run`` on
the worker. Each round polls every unfinished id once, over the event loop's shared session, and
the next round starts ``poll_interval`` after this one started: no id is polled more often.

The event names only the predictions that ended and their status; the worker asks for each
again before it stores or records it (fresh output URLs, and nothing large in Airflow's database).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, TypedDict, cast

from airflow_provider_cometapi.exceptions import CometAPIError, UnexpectedEventError
from airflow_provider_cometapi.models import TERMINAL_STATUSES, check_prediction_id
from airflow_provider_cometapi.polling import MAX_FAILED_POLLS, report_prediction_end

if TYPE_CHECKING:
    from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
    from airflow_provider_cometapi.models import Prediction
    from airflow_provider_cometapi.retry import LoggerLike

BATCH_EVENT_VERSION = 1
LOST: Final = "lost"
"""In an event: polling this prediction failed for good (unknown id, a broken answer); the worker asks once more."""
# Polls in flight at once per batch: well under the loop session's 100 connections.
POLL_CONCURRENCY = 32
# At most one progress line per this many seconds, whatever the number of predictions or polls.
PROGRESS_SECONDS = 5.0
_DEADLINE_SLACK = 0.1

BatchReason = Literal["ready", "done", "timeout", "error"]
_REASONS: frozenset[str] = frozenset({"ready", "done", "timeout", "error"})


class BatchEvent(TypedDict):
    """The one event of a ``PredictionBatchTrigger`` (and the end of a wait on the worker)."""

    v: int
    """The version of this shape: 1."""
    reason: BatchReason
    """``ready`` (enough ended, or outputs should be stored), ``done`` (all ended), ``timeout``
    (the batch's deadline passed), ``error`` (polling kept failing)."""
    finished: dict[str, str]
    """The predictions that ended: id to terminal status, or ``lost``."""
    message: str
    """One sentence for the task log."""


def batch_event(reason: BatchReason, finished: Mapping[str, str], message: str) -> BatchEvent:
    return {"v": BATCH_EVENT_VERSION, "reason": reason, "finished": dict(finished), "message": message}


def read_batch_event(event: object) -> BatchEvent:
    """
    ``event`` checked to be one of ours.

    :raises UnexpectedEventError: not a mapping, another version or reason, or a finished map
        that is not prediction ids to statuses.
    """
    if not isinstance(event, Mapping):
        raise _unexpected(event, "it is not a mapping")
    version, reason, finished, message = (
        event.get("v"),
        event.get("reason"),
        event.get("finished"),
        event.get("message"),
    )
    if version != BATCH_EVENT_VERSION:
        raise _unexpected(event, f"its version {version!r} is not {BATCH_EVENT_VERSION}")
    if reason not in _REASONS:
        raise _unexpected(event, f"its reason {reason!r} is not one of {', '.join(sorted(_REASONS))}")
    if not isinstance(finished, Mapping) or not isinstance(message, str):
        raise _unexpected(event, "its finished or message field has the wrong type")
    checked: dict[str, str] = {}
    for prediction_id, status in finished.items():
        if not isinstance(status, str) or (status not in TERMINAL_STATUSES and status != LOST):
            raise _unexpected(event, f"prediction {str(prediction_id)[:40]!r} has the status {str(status)[:40]!r}")
        try:
            checked[check_prediction_id(prediction_id)] = status
        except CometAPIError:
            raise _unexpected(event, f"{str(prediction_id)[:40]!r} is not a prediction id") from None
    return batch_event(cast("BatchReason", reason), checked, message)


def _unexpected(event: object, why: str) -> UnexpectedEventError:
    shown = repr(event)
    return UnexpectedEventError(
        f"Received an unexpected event while waiting for a batch ({why}): "
        f"{shown[:300] + '...' if len(shown) > 300 else shown}. This is a bug or a trigger from another "
        "provider version; clear the task: it resumes from its manifest."
    )


@dataclass(frozen=True)
class Progress:
    """The batch's counts when the wait began: the wait adds what it sees end."""

    total: int
    done: int
    failed: int

    def line(self, ended: int, failed: int, in_flight: int) -> str:
        """``1,200 of 5,000 done, 3 failed, 40 in flight``."""
        return f"{self.done + ended:,} of {self.total:,} done, {self.failed + failed:,} failed, {in_flight:,} in flight"


@dataclass
class BatchWatch:
    """
    The state of one wait for many predictions.

    :param prediction_ids: the unfinished predictions to wait for.
    :param resume_after: hand back once this many have ended.
    :param flush_after: hand back once the first that ended has waited this many seconds
        (its outputs are to be stored long before they expire); ``None``: never for that.
    :param deadline: absolute Unix time: a ``timeout`` event then.
    """

    prediction_ids: Sequence[str]
    poll_interval: float
    deadline: float | None
    resume_after: int
    log: LoggerLike
    flush_after: float | None = None
    progress: Progress | None = None
    running: dict[str, str] = field(init=False)
    finished: dict[str, str] = field(init=False, default_factory=dict)
    failed_polls: dict[str, int] = field(init=False, default_factory=dict)
    rounds: int = field(init=False, default=0)
    polls: int = field(init=False, default=0)
    first_finished_at: float | None = field(init=False, default=None)
    _round_failures: int = field(init=False, default=0)
    _rounds_all_failed: int = field(init=False, default=0)
    _last_error: str = field(init=False, default="")
    _logged_at: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.running = dict.fromkeys(self.prediction_ids, "starting")
        self._logged_at = time.monotonic()

    def observe(self, prediction_id: str, prediction: Prediction) -> None:
        """A poll of ``prediction_id`` answered ``prediction``."""
        self.polls += 1
        self.failed_polls.pop(prediction_id, None)
        if prediction.is_terminal:
            self._finish(prediction_id, prediction.status)
        else:
            self.running[prediction_id] = prediction.status

    def poll_failed(self, prediction_id: str, error: CometAPIError) -> None:
        """
        A poll failed (after the hook's retries). A transient failure is tolerated
        ``MAX_FAILED_POLLS - 1`` times in a row; anything else marks the prediction ``lost`` for
        the worker to look at.
        """
        self.polls += 1
        self._round_failures += 1
        self._last_error = str(error)
        failures = self.failed_polls.get(prediction_id, 0) + 1
        self.failed_polls[prediction_id] = failures
        if not error.transient:
            self.log.warning("Polling prediction %s failed: %s", prediction_id, error)
            self._finish(prediction_id, LOST)

    def _finish(self, prediction_id: str, status: str) -> None:
        if self.running.pop(prediction_id, None) is not None:
            self.finished[prediction_id] = status
            if self.first_finished_at is None:
                self.first_finished_at = time.monotonic()

    def deadline_passed(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline - _DEADLINE_SLACK

    def after_round(self, polled: int) -> BatchEvent | None:
        """The event that ends the wait after a round of ``polled`` polls, if it is time."""
        self.rounds += 1
        all_failed = polled > 0 and self._round_failures >= polled
        self._rounds_all_failed = self._rounds_all_failed + 1 if all_failed else 0
        self._round_failures = 0
        self.log_progress()
        if not self.running:
            return self._event("done", f"All {len(self.finished):,} predictions waited for have ended.")
        if self.deadline_passed():
            return self.timed_out()
        if self._rounds_all_failed >= MAX_FAILED_POLLS:
            return self._event(
                "error",
                f"Polling failed for every one of {len(self.running):,} predictions {self._rounds_all_failed} rounds "
                f"in a row; the last error: {self._last_error}",
            )
        if len(self.finished) >= self.resume_after:
            return self._event("ready", f"{len(self.finished):,} predictions ended; resuming for the next ones.")
        if (
            self.flush_after is not None
            and self.first_finished_at is not None
            and time.monotonic() - self.first_finished_at >= self.flush_after
        ):
            return self._event("ready", f"{len(self.finished):,} predictions ended; resuming to store their outputs.")
        return None

    def timed_out(self) -> BatchEvent:
        return self._event(
            "timeout", f"The batch's deadline passed with {len(self.running):,} predictions still unfinished."
        )

    def _event(self, reason: BatchReason, message: str) -> BatchEvent:
        return batch_event(reason, self.finished, message)

    def next_delay(self, round_started: float | None) -> float | None:
        """Seconds until the next round (``poll_interval`` after the last began), ``None`` past the deadline."""
        elapsed = 0.0 if round_started is None else time.monotonic() - round_started
        delay = max(0.0, self.poll_interval - elapsed)
        if self.deadline is None:
            return delay
        remaining = self.deadline - time.time()
        return None if remaining <= 0 else min(delay, remaining)

    def log_progress(self, *, force: bool = False) -> None:
        """One progress line, at most every ``PROGRESS_SECONDS``."""
        now = time.monotonic()
        if self.progress is None or (not force and now - self._logged_at < PROGRESS_SECONDS):
            return
        self._logged_at = now
        failed = sum(1 for status in self.finished.values() if status != "succeeded")
        self.log.info("%s.", self.progress.line(len(self.finished), failed, len(self.running)))


async def await_batch(hook: CometAPIHook, watch: BatchWatch, *, not_before: float | None = None) -> BatchEvent:
    """
    Poll until ``watch`` says the wait is over; the one loop of the triggerer and the worker.

    Sleeps first: the caller has just created or seen every prediction. With ``not_before``
    (absolute Unix time), an event that comes earlier is held until then while polling goes on
    at the same pace, so the event returned holds what ended meanwhile (the trigger's
    workaround for apache/airflow#72716, see ``triggers/hold.py``). A round that takes the
    event back (polls that failed recover) resumes the wait.
    """
    started = time.monotonic()  # when the last round began
    event: BatchEvent | None = None
    held = False
    while True:
        delay = watch.next_delay(started)
        if event is None and delay is None:
            event = watch.timed_out()
        if event is not None:
            hold = 0.0 if not_before is None else not_before - time.time()
            if hold <= 0:
                return event
            if not held:
                held = True
                watch.log.info(
                    "Holding the event %.1fs more, polling on: Airflow can fail a task that resumes this soon "
                    "after it deferred (apache/airflow#72716; [cometapi] min_defer_seconds).",
                    hold,
                )
            if delay is None or not watch.running or hold <= delay:
                await asyncio.sleep(hold)  # nothing to poll before the hold ends
                return event
        await asyncio.sleep(cast("float", delay))
        started = time.monotonic()
        event = watch.after_round(await poll_round(hook, watch))


async def poll_round(hook: CometAPIHook, watch: BatchWatch) -> int:
    """Poll every unfinished prediction once, at most ``POLL_CONCURRENCY`` at a time; how many polls."""
    ids = iter(list(watch.running))
    polled = 0

    async def poller() -> None:
        # Pollers pull from one iterator: a bounded number of polls in flight, no task per id.
        nonlocal polled
        for prediction_id in ids:
            polled += 1
            try:
                prediction = await hook.aget_prediction(prediction_id, deadline=watch.deadline)
            except CometAPIError as error:
                watch.poll_failed(prediction_id, error)
            else:
                ended = prediction.is_terminal and prediction_id in watch.running
                watch.observe(prediction_id, prediction)
                if ended:  # once per prediction: the metrics of its end (never per poll)
                    report_prediction_end(prediction, hook)

    await asyncio.gather(*(poller() for _ in range(min(POLL_CONCURRENCY, len(watch.running)))))
    return polled
