"""Store a prediction's output files in any Airflow object storage before their URLs expire."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, ObjectStoragePath

from airflow_provider_cometapi.exceptions import CometAPIError, DestinationNotWritableError, OutputExpiredError
from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
from airflow_provider_cometapi.storage import extension_for, write_atomically

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_cometapi.models import Prediction
    from airflow_provider_cometapi.responses import OutputStream

# Prediction fields copied into the sidecar, so a later pipeline knows how each image was made.
_SIDECAR_FIELDS = ("id", "model", "version", "input", "metrics", "created_at", "started_at", "completed_at", "source")


class SavePredictionOutputsOperator(BaseOperator):
    """
    Download every output of a finished prediction into ``destination``.

    Files are named ``<prediction_id>_<index>.<ext>`` (extension from the content type or URL)
    beside a sidecar ``<prediction_id>.json`` with the model, input (prompt, seed...), metrics,
    timestamps and source URLs. Writes are atomic and a re-run replaces the same files. The
    return value is the list of stored URIs (images first, then the sidecar). With ``outlets``,
    each asset event carries ``{"prediction_id", "model", "prompt", "uris", "sidecar"}`` in its
    ``extra``, for asset-scheduled DAGs downstream.

    Fails when the prediction has not succeeded, and with ``OutputExpiredError`` when its files
    are gone: outputs expire about an hour after the prediction ends.

    :param prediction_id: the prediction whose outputs to store, e.g.
        ``"{{ ti.xcom_pull(task_ids='generate', key='prediction_id') }}"``. Templated.
    :param destination: a folder as an ``ObjectStoragePath`` or a URI: ``file:///data/images``,
        ``s3://aws_conn@bucket/prefix``, ``gs://...``. Templated.
    :param cometapi_conn_id: the CometAPI connection.
    :param write_sidecar: write the JSON sidecar (default True).
    """

    template_fields: Sequence[str] = ("prediction_id", "destination")
    ui_color = "#e6f4ea"

    def __init__(
        self,
        *,
        prediction_id: str,
        destination: str | ObjectStoragePath,
        cometapi_conn_id: str = CometAPIHook.default_conn_name,
        write_sidecar: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prediction_id = prediction_id
        self.destination = destination
        self.cometapi_conn_id = cometapi_conn_id
        self.write_sidecar = write_sidecar

    @cached_property
    def hook(self) -> CometAPIHook:
        return CometAPIHook(self.cometapi_conn_id)

    def execute(self, context: Context) -> list[str]:
        directory = self._prepare_destination()
        # Fetched now, not taken from XCom: the query returns fresh output URLs.
        prediction = self.hook.get_prediction(self.prediction_id)
        self._check_storable(prediction)

        stored: list[ObjectStoragePath] = []
        for index, url in enumerate(prediction.output):
            path = self.hook.stream_output(url, partial(_store, directory / f"{prediction.id}_{index}", url))
            self.log.info("Stored output %d of %d at %s", index + 1, len(prediction.output), path)
            stored.append(path)
        uris = [str(path) for path in stored]
        sidecar = self._write_sidecar(prediction, directory, uris) if self.write_sidecar else None
        self._annotate_outlets(context, prediction, uris, sidecar)
        return uris + ([sidecar] if sidecar else [])

    def _prepare_destination(self) -> ObjectStoragePath:
        """Create the folder first: a destination that cannot be written fails before any download."""
        directory = ObjectStoragePath(self.destination) if isinstance(self.destination, str) else self.destination
        try:
            directory.mkdir(parents=True, exist_ok=True)
            # A local folder can be checked without writing; object stores answer on the first write.
            if directory.protocol in ("file", "local") and not os.access(directory.path, os.W_OK):
                raise PermissionError(f"no write permission on {directory.path}")
        except OSError as error:
            raise DestinationNotWritableError(
                f"Cannot write to the destination {directory}: {error}. Choose a `destination` the worker can "
                "write to (for object storage, a connection in the URL with write access to the bucket)."
            ) from error
        return directory

    def _check_storable(self, prediction: Prediction) -> None:
        if not prediction.succeeded:
            raise CometAPIError(
                f"Prediction {prediction.id} is {prediction.status}, not succeeded: there is nothing to store. "
                "Run this task after CreatePredictionOperator (waiting) or PredictionSensor."
            )
        if not prediction.output and not prediction.data_removed:
            raise CometAPIError(f"Prediction {prediction.id} succeeded but has no output to store.")
        if prediction.data_removed or not prediction.output:
            raise OutputExpiredError(
                f"The outputs of prediction {prediction.id} have expired (data_removed): output files are kept "
                "about an hour after the prediction finishes. Store them in the same DAG run, right after "
                "the prediction."
            )

    def _write_sidecar(self, prediction: Prediction, directory: ObjectStoragePath, uris: list[str]) -> str:
        metadata = {key: prediction.to_dict().get(key) for key in _SIDECAR_FIELDS}
        metadata.update(status=prediction.status, source_urls=_shorten_data_uris(prediction.output), stored=uris)
        target = directory / f"{prediction.id}.json"
        write_atomically(target, [json.dumps(metadata, indent=2, sort_keys=True).encode()])
        return str(target)

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
        }
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra.update(extra)


def _store(stem: ObjectStoragePath, url: str, stream: OutputStream) -> ObjectStoragePath:
    target = stem.parent / f"{stem.name}.{extension_for(stream.media_type, url)}"
    write_atomically(target, stream.chunks)
    return target


def _shorten_data_uris(urls: list[str]) -> list[str]:
    return [url if not url.startswith("data:") else url.split(",", 1)[0] + ",..." for url in urls]
