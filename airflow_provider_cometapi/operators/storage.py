"""Store a prediction's output files in any Airflow object storage before their URLs expire."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, ObjectStoragePath

from airflow_provider_cometapi.cost import cost_of
from airflow_provider_cometapi.exceptions import InvalidPredictionIdError
from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
from airflow_provider_cometapi.links.prediction import PREDICTION_ID_XCOM_KEY
from airflow_provider_cometapi.models import Prediction, check_prediction_id
from airflow_provider_cometapi.storage import check_destination, is_templated, prepare_destination, store_prediction

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context, XComArg
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_cometapi.storage import StoredPrediction

# Beside the return value (the stored files alone) and the key `prediction_id`: the metadata.
SIDECAR_XCOM_KEY = "sidecar"


class SavePredictionOutputsOperator(BaseOperator):
    """
    Download every output of a finished prediction into ``destination``.

    Files are named ``<prediction_id>_<index>.<ext>``, the extension from an allow-list of image,
    video and audio types (anything else is stored as ``.bin``), beside a sidecar
    ``<prediction_id>.json`` with the model, input (prompt, seed...), metrics, timestamps and
    source URLs. Every file is proven to lie directly in ``destination`` before it is written.
    Writes are atomic and a re-run replaces the same files, and removes the temporary files a
    killed earlier run left.

    The return value is the list of stored files alone, in the prediction's output order, so a
    downstream task can map over them (``describe.expand(image=store.output)``). The metadata
    has XComs of its own: ``sidecar`` (the sidecar's URI, ``None`` with ``write_sidecar=False``)
    and ``prediction_id``, e.g. ``store.output["sidecar"]``. With ``outlets``, each asset event carries
    ``{"prediction_id", "model", "prompt", "uris", "sidecar", "cost", "currency"}`` in its ``extra``, for
    asset-scheduled DAGs downstream.

    Fails with ``InvalidDestinationError`` for a destination that cannot work (empty, relative,
    not a path or URI, ``memory://``), at DAG parse unless it is templated, else before any
    request; with ``DestinationNotWritableError`` when the folder cannot be created or written;
    with ``PredictionNotStorableError`` when the prediction has not succeeded; with
    ``OutputExpiredError`` when its files are gone (outputs expire about an hour after the
    prediction ends); with ``OutputTooLargeError`` for a file over the connection's
    ``max_output_bytes``.

    :param prediction_id: the prediction whose outputs to store: the output of the create task
        or of a ``@task.cometapi`` task as it is (``generate.output``, or the XComArg a decorated
        task returns), a prediction dict, or an id string such as
        ``"{{ ti.xcom_pull(task_ids='generate', key='prediction_id') }}"``. Templated. An id that
        cannot be one fails with ``InvalidPredictionIdError``: at DAG parse when it is a plain
        string, else before any request.
    :param destination: a folder as an ``ObjectStoragePath``, an absolute path or a URI:
        ``file:///data/images``, ``s3://aws_conn@bucket/prefix``, ``gs://...``. Templated.
    :param cometapi_conn_id: the CometAPI connection.
    :param write_sidecar: write the JSON sidecar (default True).
    """

    template_fields: Sequence[str] = ("prediction_id", "destination")
    ui_color = "#e6f4ea"

    def __init__(
        self,
        *,
        prediction_id: str | Mapping[str, Any] | XComArg,
        destination: str | ObjectStoragePath | XComArg,
        cometapi_conn_id: str = CometAPIHook.default_conn_name,
        write_sidecar: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Checked now when it can be: a typo fails at DAG parse, not after the run started.
        if _known_at_parse(destination):
            check_destination(destination)
        if isinstance(prediction_id, str) and not is_templated(prediction_id):
            prediction_id_of(prediction_id)
        self.prediction_id = prediction_id
        self.destination = destination
        self.cometapi_conn_id = cometapi_conn_id
        self.write_sidecar = write_sidecar
        # What execute stored, for OpenLineage (get_openlineage_facets_on_complete).
        self._lineage: tuple[dict[str, Any], StoredPrediction] | None = None

    @cached_property
    def hook(self) -> CometAPIHook:
        return CometAPIHook(self.cometapi_conn_id)

    def execute(self, context: Context) -> list[str]:
        # Before any request: an id or a destination that cannot work costs no call and no download.
        prediction_id = prediction_id_of(self.prediction_id)
        directory = prepare_destination(self.destination)
        # Fetched now, not taken from XCom: the query returns fresh output URLs.
        prediction = self.hook.get_prediction(prediction_id)
        stored = store_prediction(
            prediction,
            directory,
            self.hook.stream_output,
            write_sidecar=self.write_sidecar,
            on_stored=self._logged,
            prices=self.hook.settings.prices,
        )
        prices = self.hook.settings.prices
        self._lineage = (
            {**prediction.to_dict(), "cost": cost_of(prediction, prices), "currency": prices.currency},
            stored,
        )
        self._annotate_outlets(context, prediction, stored.outputs, stored.sidecar)
        context["ti"].xcom_push(key=PREDICTION_ID_XCOM_KEY, value=stored.prediction_id)
        context["ti"].xcom_push(key=SIDECAR_XCOM_KEY, value=stored.sidecar)
        return stored.outputs

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage[Any, Any] | None:
        """
        For the OpenLineage provider: the stored files (outputs and sidecar) as output datasets, and
        the ``cometapi_predictions`` run facet (model, id, images, cost). Nothing before the files are stored.
        """
        if self._lineage is None:
            return None
        from airflow_provider_cometapi.lineage import operator_lineage, prediction_summary

        priced, stored = self._lineage
        summary = prediction_summary(priced, model=priced.get("model"))
        return operator_lineage(summary=summary, stored=stored.uris)

    def _logged(self, index: int, count: int, path: ObjectStoragePath) -> None:
        self.log.info("Stored output %d of %d at %s", index + 1, count, path)

    def _annotate_outlets(self, context: Context, prediction: Prediction, uris: list[str], sidecar: str | None) -> None:
        if not self.outlets:
            return
        model_input = prediction.raw.get("input")
        extra: dict[str, Any] = {
            "prediction_id": prediction.id,
            "model": prediction.model,
            "prompt": model_input.get("prompt") if isinstance(model_input, dict) else None,
            "uris": uris,
            "sidecar": sidecar,
            "cost": cost_of(prediction, self.hook.settings.prices),
            "currency": self.hook.settings.prices.currency,
        }
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra.update(extra)


def prediction_id_of(value: Any) -> str:
    """
    The checked id in what a DAG passes as ``prediction_id``.

    Accepted: an id string, a prediction dict (the return value of ``CreatePredictionOperator``,
    ``PredictionSensor`` or ``@task.cometapi``) or a ``Prediction``.

    :raises InvalidPredictionIdError: anything else, or an id that cannot be one.
    """
    if isinstance(value, Prediction):
        return value.id
    if isinstance(value, Mapping):
        if "id" not in value:
            raise InvalidPredictionIdError(
                f"prediction_id got a dict without an 'id' (keys: {', '.join(map(str, list(value)[:10]))}). Pass the "
                "prediction the create task returned (generate.output), or its id."
            )
        return check_prediction_id(value["id"])
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        raise InvalidPredictionIdError(
            f"prediction_id got {len(value)} values, not one prediction: the output of a mapped task is a list. "
            "Store each with SavePredictionOutputsOperator.partial(...).expand(prediction_id=generate.output)."
        )
    return check_prediction_id(value)


def _known_at_parse(destination: Any) -> bool:
    """A value that is already what execute gets: not a template, not an XComArg resolved later."""
    if isinstance(destination, str):
        return not is_templated(destination)
    return destination is None or isinstance(destination, ObjectStoragePath | PurePath | int | float | bytes)
