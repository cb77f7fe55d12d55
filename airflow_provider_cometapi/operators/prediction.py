"""Start a prediction and wait for its result, in the triggerer or on the worker."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, conf

from airflow_provider_cometapi import parameters
from airflow_provider_cometapi.cost import (
    Budget,
    BudgetCounter,
    SpendLedger,
    cost_of,
    image_count,
    pending_key,
    planned_images,
    summary,
)
from airflow_provider_cometapi.exceptions import (
    CometAPIError,
    CometAPIHTTPError,
    InvalidInputError,
    InvalidModelIdError,
    PredictionFailedError,
    PredictionNotFoundError,
    PredictionTimeoutError,
    PredictionWaitError,
    UnexpectedEventError,
)
from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
from airflow_provider_cometapi.links.prediction import PREDICTION_ID_XCOM_KEY, PredictionLink
from airflow_provider_cometapi.models import Prediction
from airflow_provider_cometapi.polling import (
    CANCEL_TIMEOUT,
    PredictionWatch,
    read_event,
    record_failure,
    resolve_event,
    wait_for_prediction,
)
from airflow_provider_cometapi.resume import (
    TaskStateStore,
    forget,
    remember,
    request_fingerprint,
    resumable_prediction,
)
from airflow_provider_cometapi.triggers.prediction import defer_wait

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context
    from airflow.providers.openlineage.extractors import OperatorLineage


class CreatePredictionOperator(BaseOperator):
    """
    Start a CometAPI prediction (for example a FLUX image) and, by default, wait for its result.

    The prediction id is pushed to XCom (key ``prediction_id``) as soon as the prediction
    exists, before any waiting. The return value (XCom ``return_value``) is the prediction as a
    JSON dict, with ``output`` always a list of URLs, plus ``cost`` (images x the connection's
    price for the model, ``None`` when it has no price or the prediction has not ended) and
    ``currency``; its logs go to the task log instead, which ends with the images, predict time
    and cost. With ``outlets``, each asset event's ``extra`` holds ``{"prediction_id", "model",
    "images", "cost", "currency"}``.

    Fails with the prediction's own error when it ends ``failed``, ``canceled`` or ``aborted``,
    after pushing a small record of it to XCom (key ``failed_prediction``: ``id``, ``status``,
    ``model``, ``error`` cut to 1,000 characters, its times; no input, output or log) for the
    Images tab; on timeout it cancels the prediction and fails saying whether the cancel was accepted.
    ``poll_interval``, ``timeout`` and ``prefer_wait`` are checked when the DAG is parsed
    (``InvalidParameterError``), so a value that cannot work never creates a prediction.
    Other ``BaseOperator`` arguments (``retries``, ``pool``, ...) pass through ``kwargs``.

    :param model: ``owner/name`` or ``owner/name:version``, e.g. ``black-forest-labs/flux-schnell``.
        Templated.
    :param input: the model's input, e.g. ``{"prompt": "...", "aspect_ratio": "16:9"}``. Templated,
        and mappable with ``.expand(input=[...])``. Known FLUX fields are checked before any request;
        other keys are passed through.
    :param cometapi_conn_id: the CometAPI connection.
    :param wait_for_completion: wait for the prediction to end (default); if False, return the
        prediction as just created.
    :param deferrable: wait in the triggerer, freeing the worker slot. Defaults to Airflow's
        ``[operators] default_deferrable``.
    :param poll_interval: seconds (or a timedelta) between status checks; finite and positive.
    :param timeout: how long to wait (seconds or timedelta, finite and positive) before
        cancelling the prediction and failing the task. No status check outlives it.
    :param prefer_wait: a whole number from 1 to 60: ask the gateway to hold the create call
        that many seconds; a prediction that finishes within it completes the task without any
        polling or deferral.
    :param cancel_on_kill: cancel the prediction when the task is killed (worker ``on_kill``, or a
        user marking a deferred task failed/success on Airflow 3.3+).
    :param durable: on Airflow 3.3+, a try that follows one which already created a prediction
        (worker crash, broken wait, task retry) resumes that prediction instead of paying for a
        new one: it waits for it while it runs, returns it once succeeded, and creates a fresh
        one only if it failed, was canceled, or its files expired. The record lives in Airflow's
        task state store and is dropped when the task succeeds, so clearing a finished task
        makes new images. No effect on older Airflow, where every try creates a prediction.
    :param max_images: the most images the task may make, all its tries together: a create that
        could make more (``num_outputs``, else 1) fails with ``BudgetExceededError`` before it is
        sent, and is not retried. Checked at DAG parse: a whole number >= 1, or None.
    :param max_cost: the most the task may spend, in the connection's ``currency``, counted as
        ``max_images`` is with the connection's price of the model. A model without a price fails
        the task with ``MissingPriceError`` before any request. A finite number >= 0, or None.
        On Airflow 3.3+ the task state store keeps what each try spent, so a retry counts what
        the earlier ones made (see the docs page "Cost and budgets").
    :param cancel_after: off by default. Seconds (or a timedelta), sent as Replicate's
        ``Cancel-After`` header: the gateway aborts the prediction (not charged) if it has not
        started by then, and cancels it if it still runs. CometAPI does not document that it
        honours the header; ``timeout`` still bounds the wait either way.
    """

    template_fields: Sequence[str] = ("model", "input")
    template_fields_renderers = {"input": "json"}
    operator_extra_links = (PredictionLink(),)
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        model: str,
        input: Mapping[str, Any],
        cometapi_conn_id: str = CometAPIHook.default_conn_name,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float | timedelta = 5.0,
        timeout: float | timedelta = timedelta(hours=1),
        prefer_wait: int | None = None,
        cancel_on_kill: bool = True,
        durable: bool = True,
        max_images: int | None = None,
        max_cost: float | None = None,
        cancel_after: float | timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.input = input
        self.cometapi_conn_id = cometapi_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = parameters.poll_interval(poll_interval)
        self.timeout = parameters.duration("timeout", timeout)
        self.prefer_wait = parameters.prefer_wait(prefer_wait)
        self.cancel_on_kill = cancel_on_kill
        self.durable = durable
        self.budget = Budget.of(max_images, max_cost)
        self.max_images = max_images
        self.max_cost = max_cost
        self.cancel_after = parameters.cancel_after(cancel_after)
        self.prediction_id: str | None = None
        self._cancelled = False
        # The prediction the task returns, for OpenLineage (get_openlineage_facets_on_complete).
        self._lineage: dict[str, Any] | None = None

    @cached_property
    def hook(self) -> CometAPIHook:
        return CometAPIHook(self.cometapi_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        if self.budget:  # before anything: a budget that cannot be kept is refused at once
            self.budget.require_price(self.model, self.hook.settings.prices, conn_id=self.cometapi_conn_id)
        prediction = self._resume_or_create(context)
        self.prediction_id = prediction.id
        context["ti"].xcom_push(key=PREDICTION_ID_XCOM_KEY, value=prediction.id)
        if not self.wait_for_completion:
            self._forget(context)
            return self._result(context, prediction.to_dict())

        watch = PredictionWatch(prediction.id, self.poll_interval, time.time() + self.timeout, self.log)
        # The create answer is the first status check: a prediction that already ended (with
        # prefer_wait, or failing at once) completes here without deferring.
        event = watch.observe(prediction)
        if event is None and self.deferrable:
            defer_wait(
                self,
                watch,
                cometapi_conn_id=self.cometapi_conn_id,
                timeout=self.timeout,
                cancel_on_kill=self.cancel_on_kill,
            )
        if event is None:
            event = wait_for_prediction(self.hook, watch)
        return self._complete(context, event)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after deferral; everything is read from the trigger's event."""
        return self._complete(context, event)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage[Any, Any] | None:
        """
        For the OpenLineage provider: the ``cometapi_predictions`` run facet (model, prediction id,
        images, cost). A task that did not wait reports the id alone; one that made none, nothing.
        """
        from airflow_provider_cometapi.lineage import operator_lineage, prediction_summary

        if self._lineage is not None:
            return operator_lineage(summary=prediction_summary(self._lineage, model=str(self.model)))
        if self.prediction_id is not None:
            return operator_lineage(summary=prediction_summary({"id": self.prediction_id}, model=str(self.model)))
        return None

    def _task_state_store(self, context: Context) -> TaskStateStore | None:
        """Airflow 3.3+ gives every task instance one; older versions have none (no resumption)."""
        if not self.durable:
            return None
        store: TaskStateStore | None = context.get("task_state_store")  # type: ignore[assignment]
        return store

    def _resume_or_create(self, context: Context) -> Prediction:
        store = self._task_state_store(context)
        fingerprint = request_fingerprint(self.model, self.input)
        if store is not None and (previous := resumable_prediction(store, self.hook, fingerprint, self.log)):
            return previous
        prediction = self._create(context)
        if store is not None:
            remember(store, prediction.id, fingerprint)
        self.log.info("Created prediction %s of model %s.", prediction.id, self.model)
        return prediction

    def _create(self, context: Context) -> Prediction:
        """Create the prediction; with a budget, only once the budget allows it, and counted."""
        if not self.budget:
            return self.hook.create_prediction(
                self.model, self.input, wait=self.prefer_wait, cancel_after=self.cancel_after
            )
        prices = self.hook.settings.prices
        # Kept whether or not `durable`: a budget counts every try's spending.
        ledger = SpendLedger(context.get("task_state_store"))  # type: ignore[arg-type]
        ledger.refresh(self._ended_or_none, prices, self.model)
        counter = BudgetCounter(self.budget, prices, self.model, spent=ledger.spent())
        images = planned_images(self.input)
        counter.require(images)
        pending = pending_key(context["ti"].try_number)
        # Recorded before the create is sent: one that may reach the gateway counts even if this try dies.
        ledger.record(pending, counter.planned(images), ended=False)
        try:
            prediction = self.hook.create_prediction(
                self.model, self.input, wait=self.prefer_wait, cancel_after=self.cancel_after
            )
        except CometAPIError as error:
            if _surely_nothing_created(error):
                ledger.drop(pending)
            raise
        ledger.record(prediction.id, counter.planned(images), ended=False, replacing=pending)
        return prediction

    def _ended_or_none(self, prediction_id: str) -> Prediction | None:
        try:
            return self.hook.get_prediction(prediction_id)
        except PredictionNotFoundError:
            return None

    def _settle(self, context: Context, event: Any) -> None:
        """Record what an unsuccessful prediction made, so a retry's budget counts it as it is."""
        if not self.budget:
            return
        try:
            prediction = read_event(event)["prediction"]
        except UnexpectedEventError:
            return
        if prediction is not None and isinstance(prediction.get("id"), str):
            images = image_count(prediction)
            counter = BudgetCounter(self.budget, self.hook.settings.prices, self.model)
            SpendLedger(context.get("task_state_store")).record(  # type: ignore[arg-type]
                prediction["id"], counter.planned(images), ended=True
            )

    def _result(self, context: Context, prediction: dict[str, Any]) -> dict[str, Any]:
        """The return value: the prediction with its ``cost`` and ``currency``, also in asset event extras."""
        prices = self.hook.settings.prices
        result = {**prediction, "cost": cost_of(prediction, prices, model=self.model), "currency": prices.currency}
        if self.outlets:
            extra = {
                "prediction_id": result.get("id"),
                "model": self.model,
                "images": image_count(result),
                "cost": result["cost"],
                "currency": result["currency"],
            }
            for outlet in self.outlets:
                context["outlet_events"][outlet].extra.update(extra)
        return result

    def _forget(self, context: Context) -> None:
        if (store := self._task_state_store(context)) is not None:
            forget(store)
        if self.budget:
            SpendLedger(context.get("task_state_store")).forget()  # type: ignore[arg-type]

    def _will_resume(self, context: Context) -> bool:
        """Whether a next try of this task would pick the prediction up again."""
        if self._task_state_store(context) is None:
            return False
        ti = context["ti"]
        return ti.try_number <= ti.max_tries

    def _complete(self, context: Context, event: Any) -> dict[str, Any]:
        try:
            prediction = resolve_event(event, self.hook)
        except PredictionTimeoutError as timeout:
            cancelled = self._cancel(timeout.prediction_id)
            raise PredictionTimeoutError(
                f"{timeout} Gave up after {self.timeout:g}s and "
                f"{'cancelled it' if cancelled else 'could not cancel it (it may still run and be billed)'}. "
                "Raise the operator's `timeout` if the model needs longer.",
                prediction_id=timeout.prediction_id,
            ) from None
        except PredictionFailedError:
            self._settle(context, event)
            record_failure(context, event, self.log)
            raise
        except PredictionWaitError as broken:
            # Waiting broke (persistent API failure) while the prediction may still be running:
            # the next try resumes it if there is one; otherwise cancel rather than leave it
            # running unwatched.
            if self._will_resume(context):
                self.log.warning("Prediction %s keeps running; the next try resumes it.", broken.prediction_id)
            else:
                self._cancel(broken.prediction_id)
            raise
        result = self._result(context, prediction)
        self.log.info(
            "Prediction %s succeeded: %s. Outputs: %s",
            result.get("id"),
            summary(result, self.hook.settings.prices, model=self.model),
            result.get("output"),
        )
        self._forget(context)
        self._lineage = result
        return result

    def _cancel(self, prediction_id: str | None) -> bool:
        """
        Best effort, at most once and within ``CANCEL_TIMEOUT``: a failed cancel must not hide
        why the task ended, nor hold it long after its wait ended.

        Returns whether CometAPI accepted the cancel.
        """
        if not prediction_id or self._cancelled:
            return False
        self._cancelled = True
        try:
            accepted = self.hook.cancel_prediction(prediction_id, deadline=time.time() + CANCEL_TIMEOUT) is not None
        except Exception as error:
            self.log.warning("Could not cancel prediction %s: %s", prediction_id, error)
            return False
        if accepted:
            self.log.info("Cancelled prediction %s.", prediction_id)
        return accepted

    def on_kill(self) -> None:
        """Cancel the prediction (once) when the worker kills the task, unless ``cancel_on_kill=False``."""
        if self.cancel_on_kill:
            self._cancel(self.prediction_id)


def _surely_nothing_created(error: CometAPIError) -> bool:
    """A create that failed so that no prediction can exist: refused locally, throttled, or a 4xx answer."""
    if error.nothing_created or isinstance(error, InvalidInputError | InvalidModelIdError):
        return True
    return isinstance(error, CometAPIHTTPError) and 400 <= error.http_status < 500
