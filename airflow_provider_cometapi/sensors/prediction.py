"""Wait for any prediction by id: poke, reschedule, or deferred to the triggerer."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_cometapi import parameters
from airflow_provider_cometapi.exceptions import CometAPIError, PredictionFailedError, PredictionTimeoutError
from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
from airflow_provider_cometapi.polling import LogMode, PredictionWatch, record_failure, resolve_event
from airflow_provider_cometapi.triggers.prediction import defer_wait

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


class PredictionSensor(BaseSensorOperator):
    """
    Wait until a prediction ends; its final JSON dict is the XCom return value.

    Fails at once, without more poking, when the prediction ends ``failed``, ``canceled`` or
    ``aborted`` (skipped instead with ``soft_fail=True``, as for a timeout), after pushing the
    same small record of it as ``CreatePredictionOperator`` (XCom ``failed_prediction``: ``id``,
    ``status``, ``model``, ``error`` cut to 1,000 characters, its times) for the Images tab.

    The arguments of every sensor (``mode`` ``"poke"`` or ``"reschedule"``, ``poke_interval``,
    ``timeout``, ``soft_fail``) work as usual, in every mode; deferred, ``poke_interval`` is the
    poll interval and ``timeout`` the trigger's absolute deadline. ``timeout`` must be finite and
    positive (no poke outlives it), and so must ``poke_interval`` when deferred; a 0
    ``poke_interval`` in poke or reschedule mode is allowed as Airflow allows it. Checked when
    the DAG is parsed (``InvalidParameterError``).

    :param prediction_id: the prediction to wait for, e.g.
        ``"{{ ti.xcom_pull(task_ids='create', key='prediction_id') }}"``. Templated.
    :param cometapi_conn_id: the CometAPI connection.
    :param deferrable: wait in the triggerer. Defaults to ``[operators] default_deferrable``.
    :param cancel_on_kill: cancel the prediction when a user kills the deferred sensor (Airflow
        3.3+). Off by default: the sensor watches a prediction it did not start.
    """

    template_fields: Sequence[str] = ("prediction_id",)
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        prediction_id: str,
        cometapi_conn_id: str = CometAPIHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        cancel_on_kill: bool = False,
        **kwargs: Any,
    ) -> None:
        # Before Airflow's own checks, which let NaN and infinity through to a raw OverflowError.
        for name in ("timeout", "poke_interval"):
            if kwargs.get(name) is not None:
                parameters.duration(name, kwargs[name], allow_zero=name == "poke_interval" and not deferrable)
        super().__init__(**kwargs)
        if deferrable:  # the defaults too ([sensors] default_timeout): they become the trigger's
            parameters.poll_interval(self.poke_interval, name="poke_interval")
            parameters.duration("timeout", self.timeout)
        self.prediction_id = prediction_id
        self.cometapi_conn_id = cometapi_conn_id
        self.deferrable = deferrable
        self.cancel_on_kill = cancel_on_kill

    @cached_property
    def hook(self) -> CometAPIHook:
        return CometAPIHook(self.cometapi_conn_id)

    @cached_property
    def _watch(self) -> PredictionWatch:
        # Kept across pokes in poke mode, so the log shows only what is new at each poke; made
        # at the first poke, as Airflow starts the sensor's timeout then. A rescheduled sensor
        # is a fresh object at every poke: its deadline only bounds that poke.
        return PredictionWatch(
            self.prediction_id,
            self.poke_interval,
            time.time() + self.timeout,
            self.log,
            LogMode.AT_END if self.reschedule else LogMode.STREAM,
        )

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        # One look first: a prediction that already ended needs no trigger.
        try:
            done = self.poke(context)
        except (AirflowFailException, AirflowSensorTimeout) as error:
            if self.soft_fail or self.never_fail:
                raise AirflowSkipException(
                    f"Skipping ({'soft_fail' if self.soft_fail else 'never_fail'}): {error}"
                ) from error
            raise
        if done.is_done:
            return done.xcom_value
        defer_wait(
            self,
            self._watch,
            cometapi_conn_id=self.cometapi_conn_id,
            timeout=self.timeout,
            cancel_on_kill=self.cancel_on_kill,
        )

    def poke(self, context: Context) -> PokeReturnValue:
        try:
            event = self._watch.observe(self.hook.get_prediction(self.prediction_id, deadline=self._watch.deadline))
        except CometAPIError as error:
            event = self._watch.poll_failed(error)
            if event is not None and not error.transient:
                raise  # a wrong id or key: its own error type and message, at once
        if event is None:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._result(context, event))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after deferral; everything is read from the trigger's event."""
        return self._result(context, event)

    def _result(self, context: Context, event: Any) -> dict[str, Any]:
        try:
            return resolve_event(event, self.hook)
        except PredictionTimeoutError as error:
            raise AirflowSensorTimeout(str(error)) from error
        except PredictionFailedError as error:
            record_failure(context, event, self.log)
            # Final: poking again cannot change a failed prediction.
            raise AirflowFailException(str(error)) from error
