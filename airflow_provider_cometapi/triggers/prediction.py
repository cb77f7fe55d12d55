"""The trigger that waits for a prediction in the triggerer, without holding a worker slot."""

from __future__ import annotations

import asyncio
import sys
import time
import traceback
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

import structlog
from airflow.triggers.base import TriggerEvent

from airflow_provider_cometapi import metrics, parameters
from airflow_provider_cometapi.api import redact_urls
from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
from airflow_provider_cometapi.polling import (
    CANCEL_TIMEOUT,
    LogMode,
    PredictionEvent,
    PredictionWatch,
    await_prediction,
    error_event,
    report_end,
)
from airflow_provider_cometapi.triggers import hold
from airflow_provider_cometapi.triggers.base import CometAPITrigger

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator

# Per trigger class: the logging configuration's logger factory, and the logger made under it.
_SHARED_LOGGER: dict[type, tuple[tuple[object, ...], Any]] = {}


def _logger_name(cls: type) -> str:
    """``LoggingMixin``'s name for the class's logger, so that records are named as they always were."""
    name = getattr(cls, "_logger_name", None) or f"{cls.__module__}.{cls.__name__}"
    prefix = getattr(cls, "_log_config_logger_name", None)
    return f"{prefix}.{name}" if prefix else name


# The deferral's own timeout comes this long after the trigger's deadline, so that the
# trigger's timeout event (which cancels the prediction) wins over Airflow killing the wait.
DEFER_TIMEOUT_MARGIN = timedelta(minutes=3)
# An unexpected error's own words in the trigger's event and log are cut to this many characters.
UNEXPECTED_ERROR_CHARS = 1000


class PredictionTrigger(CometAPITrigger):
    """
    Poll a prediction until it ends, then fire exactly one event, a ``PredictionEvent``.

    One hook serves the whole run: one connection lookup, and the event loop's HTTP session
    that every trigger in the triggerer shares. The outcome, the statuses the prediction went
    through and its log are written once, in one record, when it ends; a wait longer than a
    minute also says how it is doing once a minute. The first poll comes after 0.5 to 1.5 poll
    intervals, so that triggers deferred together do not poll together. Transient failures are
    retried by the hook's policy and tolerated for a few polls; persistent ones, and anything
    unexpected, become an ``error`` event rather than a dead trigger.

    :param prediction_id: the prediction to wait for.
    :param cometapi_conn_id: the CometAPI connection.
    :param poll_interval: seconds between polls; finite and positive.
    :param deadline: absolute Unix time after which a ``timeout`` event fires; it survives a
        triggerer restart (a deadline already passed fires at once). No poll outlives it.
    :param cancel_on_kill: cancel the prediction when a user kills the deferred task (marks it
        failed or success, or clears it); Airflow 3.3+. A triggerer restart never cancels.
    :param not_before: absolute Unix time before which the event is not handed back (the
        deferral plus ``[cometapi] min_defer_seconds``, set by ``defer_wait``): a quick
        prediction's resume must not beat the executor's report of the deferral
        (apache/airflow#72716, see ``triggers/hold.py``). ``None``: no hold.
    """

    def __init__(
        self,
        prediction_id: str,
        cometapi_conn_id: str = CometAPIHook.default_conn_name,
        poll_interval: float = 5.0,
        deadline: float | None = None,
        cancel_on_kill: bool = True,
        not_before: float | None = None,
    ) -> None:
        super().__init__()
        self.prediction_id = prediction_id
        self.cometapi_conn_id = cometapi_conn_id
        self.poll_interval = parameters.poll_interval(poll_interval)
        self.deadline = parameters.deadline(deadline)
        self.cancel_on_kill = cancel_on_kill
        self.not_before = parameters.deadline(not_before)
        self._hook: CometAPIHook | None = None

    @property
    def log(self) -> Any:
        """
        One logger for every ``PredictionTrigger`` in the process, made on first use.

        A logger of its own per trigger (``LoggingMixin``'s) is assembled again for each of
        thousands of triggers, and that costs about as much as the record it writes. The
        triggerer sends each record to its trigger's log by the context it binds around the
        trigger (``trigger_id``), not by the logger, so one shared logger writes exactly the same
        records. It is made again when logging is configured again or the standard streams it
        may write to are replaced (a logger holds the stream it was made with).
        """
        made_under = (structlog.get_config()["logger_factory"], sys.stdout, sys.stderr)
        shared = _SHARED_LOGGER.get(type(self))
        if shared is None or shared[0] != made_under:
            shared = _SHARED_LOGGER[type(self)] = (made_under, structlog.get_logger(_logger_name(type(self))).bind())
        return shared[1]

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The classpath and the six constructor arguments: ids, conn id, deadline, hold; never a secret."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "prediction_id": self.prediction_id,
                "cometapi_conn_id": self.cometapi_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "cancel_on_kill": self.cancel_on_kill,
                "not_before": self.not_before,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until the prediction ends, the deadline passes or polling keeps failing; yield one event."""
        # The outcome and the prediction's log are written once, in one record, at the end: with
        # thousands of triggers, log records would otherwise cost more than the polls.
        watch = PredictionWatch(self.prediction_id, self.poll_interval, self.deadline, self.log, LogMode.COLLECT)
        self._hook = CometAPIHook(self.cometapi_conn_id)
        event: PredictionEvent
        metrics.wait_started()
        try:
            event = await await_prediction(self._hook, watch)
        except Exception as error:  # anything unexpected must end the wait, not kill the trigger
            # Whatever raised may name a URL it tried: shown without its query or user info, in
            # the event and in the log, whose traceback is its frames only (they hold no message).
            # Redacted whole, then cut (the event is kept in Airflow's database): a cut URL could hide its parts.
            detail = redact_urls(str(error))[:UNEXPECTED_ERROR_CHARS]
            message = (
                f"Waiting for prediction {self.prediction_id} failed unexpectedly: {type(error).__name__}: {detail}"
            )
            self.log.error("%s\n%s", message, "".join(traceback.format_tb(error.__traceback__)).rstrip())
            event = report_end(watch, error_event(self.prediction_id, message))
        finally:
            metrics.wait_finished()
            await self.cleanup()
        if self.not_before is not None and (hold := self.not_before - time.time()) > 0:
            await asyncio.sleep(hold)  # the prediction has ended: nothing more to poll meanwhile
        statuses = f" Statuses: {', '.join(watch.statuses)}." if watch.statuses else ""
        if watch.end_log:
            self.log.info("%s%s Its log:\n%s", event["message"], statuses, watch.end_log)
        else:
            self.log.info("%s%s", event["message"], statuses)
        yield TriggerEvent(event)

    async def on_kill(self) -> None:
        """Cancel the remote prediction when a user killed the task (not on restarts)."""
        if not self.cancel_on_kill:
            return
        self.log.info("The task was killed: cancelling prediction %s.", self.prediction_id)
        async with CometAPIHook(self.cometapi_conn_id) as hook:
            try:
                # The deadline bounds the requests, wait_for the connection lookup as well.
                cancel = hook.acancel_prediction(self.prediction_id, deadline=time.time() + CANCEL_TIMEOUT)
                await asyncio.wait_for(cancel, CANCEL_TIMEOUT + 1)
            except Exception as error:  # best effort: the task is already being killed
                self.log.warning("Could not cancel prediction %s: %s", self.prediction_id, error)


def defer_wait(
    task: BaseOperator, watch: PredictionWatch, *, cometapi_conn_id: str, timeout: float, cancel_on_kill: bool
) -> NoReturn:
    """
    Defer ``task`` to a ``PredictionTrigger`` for the rest of ``watch``; it resumes in ``execute_complete``.

    The one deferral of the operator and the sensor. Airflow's own timeout of the deferral is
    ``timeout`` plus ``DEFER_TIMEOUT_MARGIN``, so the trigger's ``timeout`` event at
    ``watch.deadline`` (on which the task cancels the prediction) comes first.
    """
    task.defer(
        trigger=PredictionTrigger(
            prediction_id=watch.prediction_id,
            cometapi_conn_id=cometapi_conn_id,
            poll_interval=watch.poll_interval,
            deadline=watch.deadline,
            cancel_on_kill=cancel_on_kill,
            not_before=time.time() + hold.min_defer_seconds(),
        ),
        method_name="execute_complete",
        timeout=timedelta(seconds=timeout) + DEFER_TIMEOUT_MARGIN,
    )
