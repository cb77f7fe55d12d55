"""The trigger that waits for the unfinished predictions of a batch: one trigger for many."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import TriggerEvent

from airflow_provider_cometapi import metrics, parameters
from airflow_provider_cometapi.batch.pacing import MAX_IN_FLIGHT
from airflow_provider_cometapi.batch.watch import BatchEvent, BatchWatch, Progress, await_batch, batch_event
from airflow_provider_cometapi.exceptions import InvalidParameterError
from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
from airflow_provider_cometapi.models import check_prediction_id
from airflow_provider_cometapi.polling import CANCEL_TIMEOUT
from airflow_provider_cometapi.triggers import hold
from airflow_provider_cometapi.triggers.base import CometAPITrigger

# Cancels in flight at once when the task is killed.
CANCEL_CONCURRENCY = 16


class PredictionBatchTrigger(CometAPITrigger):
    """
    Poll the unfinished predictions of a batch until it is worth resuming, then fire one
    ``BatchEvent``.

    One hook for all of them (one connection lookup, the triggerer loop's shared HTTP session),
    every id polled at most once per ``poll_interval``, at most 32 polls in flight. It fires once
    ``resume_after`` predictions ended, once the first that ended has waited ``flush_after``
    seconds, once all ended, at ``deadline``, or when polling fails for all of them
    ``MAX_FAILED_POLLS`` rounds in a row; but never before ``min_defer_seconds`` after the task
    deferred (until then it holds the event and polls on: apache/airflow#72716, see
    ``triggers/hold.py``). It writes no manifest and does no blocking I/O: the worker records
    what the event says. Its kwargs hold ids, counts and times, never a secret; they grow with
    the predictions in flight (at most 1,000), not with the batch.

    :param prediction_ids: the unfinished predictions, at most ``MAX_IN_FLIGHT``.
    :param cometapi_conn_id: the CometAPI connection.
    :param poll_interval: seconds between two polls of one prediction.
    :param deadline: absolute Unix time of the batch's timeout; survives a triggerer restart.
    :param resume_after: fire once this many predictions ended (1 to their number).
    :param flush_after: fire once the first that ended has waited this many seconds; ``None``: never.
    :param progress: ``[total, done, failed]`` of the whole batch when it deferred, for the
        progress line in the task log.
    :param cancel_on_kill: cancel every one of them when a user kills the deferred task.
    :param deferred_at: Unix time the task deferred; by default now (the operator builds the
        trigger as it defers). Kept in the kwargs, so a triggerer restart does not restart the hold.
    :param min_defer_seconds: fire no earlier than this long after ``deferred_at``; by default
        ``[cometapi] min_defer_seconds``, read where the trigger is built (on the worker).
    """

    def __init__(
        self,
        prediction_ids: Sequence[str],
        cometapi_conn_id: str = CometAPIHook.default_conn_name,
        poll_interval: float = 5.0,
        deadline: float | None = None,
        resume_after: int = 1,
        flush_after: float | None = None,
        progress: Sequence[int] | None = None,
        cancel_on_kill: bool = True,
        deferred_at: float | None = None,
        min_defer_seconds: float | None = None,
    ) -> None:
        super().__init__()
        if isinstance(prediction_ids, str) or not 1 <= len(prediction_ids) <= MAX_IN_FLIGHT:
            raise InvalidParameterError(
                f"prediction_ids must be a list of 1 to {MAX_IN_FLIGHT:,} prediction ids, "
                f"got {repr(prediction_ids)[:80]}."
            )
        self.prediction_ids = [check_prediction_id(prediction_id) for prediction_id in prediction_ids]
        self.cometapi_conn_id = cometapi_conn_id
        self.poll_interval = parameters.poll_interval(poll_interval)
        self.deadline = parameters.deadline(deadline)
        if not (isinstance(resume_after, int) and not isinstance(resume_after, bool) and resume_after >= 1):
            raise InvalidParameterError(f"resume_after must be a whole number >= 1, got {repr(resume_after)[:80]}.")
        self.resume_after = min(resume_after, len(self.prediction_ids))
        self.flush_after = None if flush_after is None else parameters.duration("flush_after", flush_after)
        self.progress = _progress(progress)
        self.cancel_on_kill = cancel_on_kill
        self.deferred_at = time.time() if deferred_at is None else _unix_time(deferred_at)
        self.min_defer_seconds = (
            hold.min_defer_seconds() if min_defer_seconds is None else hold.check(min_defer_seconds)
        )
        self._hook: CometAPIHook | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The classpath and every constructor argument: ids, counts, times and the conn id."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "prediction_ids": self.prediction_ids,
                "cometapi_conn_id": self.cometapi_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "resume_after": self.resume_after,
                "flush_after": self.flush_after,
                "progress": None if self.progress is None else [*self.progress.__dict__.values()],
                "cancel_on_kill": self.cancel_on_kill,
                "deferred_at": self.deferred_at,
                "min_defer_seconds": self.min_defer_seconds,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until it is worth resuming; yield one event."""
        watch = BatchWatch(
            self.prediction_ids,
            self.poll_interval,
            self.deadline,
            self.resume_after,
            self.log,
            flush_after=self.flush_after,
            progress=self.progress,
        )
        self._hook = CometAPIHook(self.cometapi_conn_id)
        not_before = self.deferred_at + self.min_defer_seconds
        event: BatchEvent
        metrics.wait_started(len(self.prediction_ids))
        try:
            event = await await_batch(self._hook, watch, not_before=not_before)
        except Exception as error:  # anything unexpected must end the wait, not kill the trigger
            self.log.exception("Waiting for %d predictions failed unexpectedly.", len(self.prediction_ids))
            event = batch_event(
                "error", watch.finished, f"Waiting for the batch failed unexpectedly: {type(error).__name__}: {error}"
            )
            await asyncio.sleep(max(0.0, not_before - time.time()))  # held like any other event
        finally:
            metrics.wait_finished(len(self.prediction_ids))
            await self.cleanup()
        watch.log_progress(force=True)
        self.log.info(event["message"])
        yield TriggerEvent(event)

    async def on_kill(self) -> None:
        """Cancel every prediction waited for, concurrently, within about ``CANCEL_TIMEOUT`` seconds."""
        if not self.cancel_on_kill:
            return
        self.log.info("The task was killed: cancelling %d predictions.", len(self.prediction_ids))
        deadline = time.time() + CANCEL_TIMEOUT
        async with CometAPIHook(self.cometapi_conn_id) as hook:
            gate = asyncio.Semaphore(CANCEL_CONCURRENCY)

            async def cancel(prediction_id: str) -> None:
                async with gate:
                    try:
                        await hook.acancel_prediction(prediction_id, deadline=deadline)
                    except Exception as error:  # best effort: the task is already being killed
                        self.log.warning("Could not cancel prediction %s: %s", prediction_id, error)

            try:
                await asyncio.wait_for(
                    asyncio.gather(*(cancel(prediction_id) for prediction_id in self.prediction_ids)),
                    CANCEL_TIMEOUT + 1,
                )
            except TimeoutError:
                self.log.warning(
                    "Cancelling stopped after %.0fs; some predictions may run to their end.", CANCEL_TIMEOUT
                )


def _unix_time(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise InvalidParameterError(f"deferred_at must be a Unix time (time.time()), got {repr(value)[:80]}.")


def _progress(value: Sequence[int] | None) -> Progress | None:
    if value is None:
        return None
    if (
        isinstance(value, str)
        or len(value) != 3
        or not all(isinstance(count, int) and not isinstance(count, bool) and count >= 0 for count in value)
    ):
        raise InvalidParameterError(f"progress must be [total, done, failed] (whole numbers), got {repr(value)[:80]}.")
    total, done, failed = value
    return Progress(total, done, failed)
