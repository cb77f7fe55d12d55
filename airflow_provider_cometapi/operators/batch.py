"""Thousands of predictions in one task: create them paced, wait in one trigger, store them, keep a manifest."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, ObjectStoragePath, conf

from airflow_provider_cometapi import parameters
from airflow_provider_cometapi.batch import pacing
from airflow_provider_cometapi.batch.inputs import load_inputs
from airflow_provider_cometapi.batch.pacing import CreatePacer
from airflow_provider_cometapi.batch.policy import FailurePolicy
from airflow_provider_cometapi.batch.run import BatchRun
from airflow_provider_cometapi.batch.watch import BatchEvent, read_batch_event
from airflow_provider_cometapi.cost import Budget, format_amount
from airflow_provider_cometapi.exceptions import (
    BatchFailedError,
    BatchManifestError,
    BatchTimeoutError,
    BatchWaitError,
    InvalidDestinationError,
)
from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
from airflow_provider_cometapi.models import ModelId
from airflow_provider_cometapi.storage import (
    check_destination,
    destination_folder,
    is_templated,
    prepare_destination,
)
from airflow_provider_cometapi.triggers.prediction import DEFER_TIMEOUT_MARGIN

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_cometapi.batch.watch import Progress
    from airflow_provider_cometapi.models import Prediction

# Outputs that ended wait at most this long in the trigger before the worker stores them: far
# under the hour after which their files expire.
FLUSH_SECONDS = 600.0
MANIFEST_SUFFIX = ".manifest.jsonl"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+", re.ASCII)


class CreatePredictionBatchOperator(BaseOperator):
    """
    Create a prediction for each of many inputs, wait for them all in one trigger, store their
    outputs as they finish, and keep a manifest that survives retries, killed workers and clears.

    Every input is checked locally before anything is created; a bad one fails the task naming
    its index (and line, for a file), with nothing created. Creates are paced: at most
    ``max_in_flight`` unfinished, at most ``creates_per_minute``, slower while CometAPI answers
    HTTP 429. While it creates, the predictions that end are found (polled on a thread of their
    own) and stored, so creating never pauses for them. Once nothing more can be created (every
    input created, or every slot taken) and nothing is being stored, the wait is deferred to one
    ``PredictionBatchTrigger`` (with ``deferrable=False`` the worker polls on); the task resumes
    to store what ended while it creates the rest. The manifest (JSON Lines, one line per input: index, input,
    prediction id, status, error, stored URIs or output URLs, attempts) and its journal record
    each prediction id as soon as its create answers; a later try, or a cleared task, reads them
    back and never creates a second prediction for an input that has one. See docs/batch.md.

    Return value (XCom ``return_value``): ``{"manifest", "destination", "total", "succeeded",
    "failed", "canceled", "predictions", "stored_files", "skipped", "images", "cost",
    "currency"}``, never per-input data (``cost``: the sum of the manifest lines' costs, ``None``
    if one is unknown). Each outlet gets one asset event whose ``extra`` holds the same dict.

    With ``max_images`` / ``max_cost`` the batch creates while its budget allows (each create
    counted at its planned images until its prediction ends, what earlier tries made counted from
    the manifest); the inputs it does not allow are recorded ``skipped``, and once everything it
    started has ended and been stored the task fails with ``BudgetExceededError`` saying how many
    were skipped and why.

    Fails with ``BatchInputError`` (a bad input), ``BatchManifestError`` (a manifest that cannot
    be read back), ``BatchManifestMismatchError`` (one written for other inputs),
    ``BatchFailedError`` (more unsuccessful inputs than ``max_failed``), ``BatchTimeoutError``
    (``timeout`` passed: every unfinished prediction is cancelled), ``BatchWaitError`` (polling
    kept failing; a retry resumes).

    :param model: ``owner/name`` or ``owner/name:version``. Templated.
    :param inputs: a list of input dicts (a string means ``{"prompt": s}``), or the URI of a JSON
        Lines file in any object storage, one input (an object or a string) per line. Templated.
    :param destination: folder to store outputs in (as ``SavePredictionOutputsOperator`` does:
        ``<id>_<n>.<ext>`` plus a ``<id>.json`` sidecar); ``None`` keeps only the output URLs in
        the manifest (they expire about an hour after each prediction). Templated.
    :param manifest: the manifest's URI; by default
        ``<destination>/<task_id>.<run_id>.manifest.jsonl``, or without a destination the same
        name under ``$AIRFLOW_HOME/cometapi/batches/<dag_id>/`` (local to the worker). Templated.
    :param max_in_flight: unfinished predictions at most, 1 to 1,000.
    :param creates_per_minute: creates per minute at most.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    :param poll_interval: seconds between two polls of one prediction.
    :param timeout: the whole batch's time (seconds or timedelta); then every unfinished
        prediction is cancelled and the task fails.
    :param max_failed: unsuccessful inputs tolerated: a count, or a fraction (``0.01``) of them.
    :param retry_failed: new predictions per input whose prediction failed, was canceled or
        aborted (0 to 10). At most ``1 + retry_failed`` predictions per input, ever.
    :param cancel_on_kill: cancel every unfinished prediction when the task is killed.
    :param max_images: the most images the whole batch may make (every try together), or ``None``.
    :param max_cost: the most the whole batch may cost, in the connection's ``currency``; needs
        the model's price in the connection's ``prices``. ``None``: no limit. See docs/cost-and-budgets.md.
    """

    template_fields: Sequence[str] = ("model", "inputs", "destination", "manifest")
    template_fields_renderers = {"inputs": "json"}
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        model: str,
        inputs: list[Any] | str | ObjectStoragePath,
        destination: str | ObjectStoragePath | None = None,
        cometapi_conn_id: str = CometAPIHook.default_conn_name,
        max_in_flight: int = 100,
        creates_per_minute: float = 600,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float | timedelta = 5.0,
        timeout: float | timedelta = timedelta(hours=6),
        max_failed: int | float = 0,
        retry_failed: int = 0,
        manifest: str | ObjectStoragePath | None = None,
        cancel_on_kill: bool = True,
        max_images: int | None = None,
        max_cost: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if _known(destination) and destination is not None:
            check_destination(destination)
        if _known(model):
            ModelId.parse(model)
        self.model = model
        self.inputs = inputs
        self.destination = destination
        self.manifest = manifest
        self.cometapi_conn_id = cometapi_conn_id
        self.max_in_flight = pacing.max_in_flight(max_in_flight)
        self.creates_per_minute = pacing.creates_per_minute(creates_per_minute)
        self.deferrable = deferrable
        self.poll_interval = parameters.poll_interval(poll_interval)
        self.timeout = parameters.duration("timeout", timeout, example=6 * 3600)
        self.policy = FailurePolicy.parse(max_failed, retry_failed)
        self.cancel_on_kill = cancel_on_kill
        self.budget = Budget.of(max_images, max_cost)
        self.max_images = max_images
        self.max_cost = max_cost
        self._run: BatchRun | None = None

    # --- Airflow's entry points ---------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        return self._advance(context, self._open(context, deadline=time.time() + self.timeout), None)

    def execute_complete(
        self, context: Context, event: Any = None, deadline: float | None = None, rate: float | None = None
    ) -> dict[str, Any]:
        """Resume after a wait: the batch is rebuilt from its manifest, then the event applied."""
        checked = read_batch_event(event)
        run = self._open(context, deadline=parameters.deadline(deadline) or time.time() + self.timeout, rate=rate)
        return self._advance(context, run, checked)

    def on_kill(self) -> None:
        """Cancel every unfinished prediction (bounded time) and record it in the manifest."""
        run = self._run
        if run is None or not self.cancel_on_kill:
            return
        try:
            run.cancel_unfinished("the task was killed")
            run.checkpoint(force=True)
        except Exception as error:  # best effort: the task is being killed
            self.log.warning("Could not cancel every prediction or record it: %s", error)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage[Any, Any] | None:
        """
        For the OpenLineage provider: the stored files and the manifest as output datasets (past 100
        files, their folder with its file count), and the ``cometapi_predictions`` run facet (model,
        at most 100 prediction ids with the count of all, images, cost). Also on failure: the files
        a failed batch stored exist.
        """
        run = self._run
        if run is None:
            return None
        from airflow_provider_cometapi.lineage import batch_summary, operator_lineage

        stored = [uri for entry in run.entries for uri in entry.stored or ()]
        return operator_lineage(
            summary=batch_summary(run.model, run.entries, run.result()), stored=stored, also=[run.manifest_uri]
        )

    # --- The batch ----------------------------------------------------------------------

    def _open(self, context: Context, *, deadline: float, rate: float | None = None) -> BatchRun:
        """Inputs checked, destination prepared, manifest read back (or made): before any create."""
        model = str(self.model)
        inputs = load_inputs(self.inputs, ModelId.parse(model))
        directory = None if self.destination is None else prepare_destination(self.destination)
        folder, name = self._manifest_place(context, directory)
        entries, existed = BatchRun.load_entries(folder / name, model, inputs, self.log)
        pacer = CreatePacer(self.creates_per_minute)
        if rate is not None:
            pacer.resume_at(rate)  # the pace a throttled wave slowed to carries over the wait
        probe = CometAPIHook(self.cometapi_conn_id)
        probe.settings  # noqa: B018  (read the connection: its max_retries shapes the policy)
        policy = replace(probe.retry_policy, on_throttled=pacer.throttled)
        hook = CometAPIHook(self.cometapi_conn_id, retry_policy=policy)
        if self.budget:  # before any create: a budget that cannot be kept is refused at once
            self.budget.require_price(model, probe.settings.prices, conn_id=self.cometapi_conn_id)
        run = BatchRun(
            hook=hook,
            model=model,
            inputs=inputs,
            entries=entries,
            manifest_folder=folder,
            manifest_name=name,
            directory=directory,
            policy=self.policy,
            pacer=pacer,
            max_in_flight=self.max_in_flight,
            deadline=deadline,
            log=self.log,
            poll_interval=self.poll_interval,
            budget=self.budget,
        )
        if existed:
            run.remove_stale_outputs()
        else:
            run.remove_stale_manifest_copies()
            run.checkpoint(force=True)
            self.log.info(
                "Batch of %d inputs for %s; manifest %s; at most %d in flight and %g creates a minute.",
                len(inputs),
                model,
                run.manifest_uri,
                self.max_in_flight,
                self.creates_per_minute,
            )
        self._run = run
        return run

    def _manifest_place(self, context: Context, directory: ObjectStoragePath | None) -> tuple[ObjectStoragePath, str]:
        if self.manifest is not None:
            path = _manifest_path(self.manifest)
            folder = prepare_destination(path.parent)
            return folder, path.name
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        run_id = str(getattr(ti, "run_id", None) or context.get("run_id") or "run")
        task = f"{self.task_id}{'' if map_index in (-1, None) else f'.{map_index}'}"
        name = _UNSAFE.sub("_", f"{task}.{run_id}")[:200] + MANIFEST_SUFFIX
        if directory is not None:
            return directory, name
        from airflow.configuration import AIRFLOW_HOME

        dag_id = _UNSAFE.sub("_", str(getattr(ti, "dag_id", self.dag_id)))
        return prepare_destination(f"{AIRFLOW_HOME}/cometapi/batches/{dag_id}"), name

    def _advance(self, context: Context, run: BatchRun, event: BatchEvent | None) -> dict[str, Any]:
        """Steps and waits until the batch ends, or defers; the manifest is written whatever happens."""
        try:
            return self._steps(context, run, event)
        except BaseException:
            try:
                run.checkpoint(force=True)
            except Exception as error:  # the original error matters more
                self.log.warning("Could not write the manifest %s: %s", run.manifest_uri, error)
            raise
        finally:
            run.close()

    def _steps(self, context: Context, run: BatchRun, event: BatchEvent | None) -> dict[str, Any]:
        ended: dict[str, Prediction | str]
        if event is not None:
            self.log.info(event["message"])
            if event["reason"] == "error":
                run.record_finished(event["finished"])
                self._broken(run, event["message"])
            ended = dict(event["finished"])
        else:
            ended = run.unstored()
        why = run.create_and_store(ended, defer_when_idle=self.deferrable)
        if why == "failed":
            run.cancel_unfinished("the batch failed: more unsuccessful inputs than max_failed allows")
            run.checkpoint(force=True)
            raise run.failure(
                BatchFailedError,
                f"The batch failed: more inputs ended unsuccessfully than {self.policy.describe(len(run.entries))}.",
            )
        if why == "timeout":
            run.cancel_unfinished(f"the batch's timeout of {self.timeout:g}s passed")
            run.checkpoint(force=True)
            raise run.failure(BatchTimeoutError, f"The batch did not finish within its timeout of {self.timeout:g}s.")
        if why == "broken":
            self._broken(run, run.poll_error or "Polling failed.")
        if why == "ended":
            return self._finish(context, run)
        # idle: nothing can be created now and nothing is being stored; the rest is waiting
        run.checkpoint(force=True)
        run.log_progress(force=True)
        running = run.running()
        watch_args = {
            "poll_interval": self.poll_interval,
            "deadline": run.deadline,
            "resume_after": pacing.resume_after(self.max_in_flight, len(running), len(run.pending())),
            "flush_after": FLUSH_SECONDS if run.directory is not None else None,
        }
        ids = [entry.prediction_id for entry in running if entry.prediction_id]
        self._defer(run, ids, run.progress(), watch_args)
        raise AssertionError("defer() returns only by raising TaskDeferred")  # pragma: no cover

    def _defer(self, run: BatchRun, ids: list[str], progress: Progress, watch_args: dict[str, Any]) -> None:
        from airflow_provider_cometapi.triggers.batch import PredictionBatchTrigger

        self.defer(
            trigger=PredictionBatchTrigger(
                prediction_ids=ids,
                cometapi_conn_id=self.cometapi_conn_id,
                progress=[progress.total, progress.done, progress.failed],
                cancel_on_kill=self.cancel_on_kill,
                **watch_args,
            ),
            method_name="execute_complete",
            kwargs={"deadline": run.deadline, "rate": run.pacer.rate},
            timeout=timedelta(seconds=max(0.0, run.deadline - time.time())) + DEFER_TIMEOUT_MARGIN,
        )

    def _broken(self, run: BatchRun, message: str) -> None:
        run.checkpoint(force=True)
        raise BatchWaitError(
            f"{message} The predictions keep running and the manifest {run.manifest_uri} has their ids: a retry "
            "of this task resumes waiting for them without creating any again."
        )

    def _finish(self, context: Context, run: BatchRun) -> dict[str, Any]:
        run.checkpoint(force=True)
        run.close(finished=True)
        result = run.result()
        run.log_progress(force=True)
        if self.policy.exceeded(result["failed"], result["total"]):
            raise run.failure(
                BatchFailedError,
                f"The batch failed: more inputs ended unsuccessfully than {self.policy.describe(result['total'])}.",
            )
        if result["skipped"]:
            raise run.budget_failure()
        if result["total"] == 0:
            self.log.warning("The batch has no inputs: nothing was created.")
        for outlet in self.outlets or ():
            context["outlet_events"][outlet].extra.update(result)
        cost = result["cost"]
        self.log.info(
            "Batch done: %d of %d succeeded, %d failed, %d predictions created in all, %d image%s, %s; manifest %s.",
            result["succeeded"],
            result["total"],
            result["failed"],
            result["predictions"],
            result["images"],
            "" if result["images"] == 1 else "s",
            "cost unknown (a model without a price in the connection's prices, or an end not known)"
            if cost is None
            else f"{format_amount(cost)} {result['currency']}",
            result["manifest"],
        )
        return result


def _manifest_path(manifest: Any) -> ObjectStoragePath:
    if isinstance(manifest, ObjectStoragePath):
        path = manifest
    elif isinstance(manifest, str | PurePath) and str(manifest).strip():
        check_destination(str(manifest))
        path = destination_folder(str(manifest))
    else:
        raise InvalidDestinationError(
            f"manifest must be the URI of a file (for example 's3://aws_default@bucket/batches/nightly.jsonl'), "
            f"got {type(manifest).__name__} {repr(manifest)[:80]}."
        )
    if not path.name or path.name.startswith("."):
        raise BatchManifestError(f"The manifest {path} names no file: give the URI of a file, ending in .jsonl.")
    return path


def _known(value: Any) -> bool:
    """A value that is already what execute gets: not a template, not an XComArg resolved later."""
    if isinstance(value, str):
        return not is_templated(value)
    return value is None or isinstance(value, ObjectStoragePath | PurePath)
