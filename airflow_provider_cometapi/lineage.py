"""
OpenLineage for the operators: the files they stored as output datasets, the predictions as a run facet.

Where ``apache-airflow-providers-openlineage`` is installed and configured, its listener asks each
operator for ``get_openlineage_facets_on_complete(task_instance)`` when the task ends; those methods
call ``operator_lineage`` here. Everything else in this module is plain data (no OpenLineage
import), so the names and the bounds are tested without the provider, and importing the provider
costs nothing where OpenLineage is absent: ``operator_lineage`` imports it only when called.

Dataset names follow OpenLineage's naming rules for object storage (``dataset_name``):

=========================================  ======================  =========================
stored file                                namespace               name
=========================================  ======================  =========================
``/data/img/a.webp``, ``file:///data/...``  ``file``                ``/data/img/a.webp``
``file://host/data/img/a.webp``            ``file://host``         ``/data/img/a.webp``
``s3://aws_conn@bucket/img/a.webp``        ``s3://bucket``         ``img/a.webp``
``gs://bucket/img/a.webp``                 ``gs://bucket``         ``img/a.webp``
other ``scheme://bucket/key``              ``scheme://bucket``     ``key``
=========================================  ======================  =========================

The Airflow connection id an object storage URI carries (``s3://conn@bucket``) is no part of the
name: the same object stored through two connections is one dataset.

Bounds: one event names at most ``MAX_FILE_DATASETS`` files; a task that stored more (a batch)
reports the folders they are in instead, each with the number of files (OpenLineage's
``outputStatistics`` facet), beside its manifest, which lists every file. The run facet holds at
most ``MAX_PREDICTION_IDS`` prediction ids, with the full count beside them.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from airflow_provider_cometapi.cost import image_count

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

# Files named one by one in an event; past it, their folders (a batch of 10,000 inputs is 20,000 files).
MAX_FILE_DATASETS = 100
# Prediction ids in the run facet; ``predictionCount`` always has the total.
MAX_PREDICTION_IDS = 100
# The run facet's key in the event: producer-prefixed, as OpenLineage asks of custom facets.
RUN_FACET_NAME = "cometapi_predictions"

# Object stores whose namespace is the bucket: the name is the key, without a leading slash.
_BUCKET_SCHEMES: Mapping[str, str] = {"s3": "s3", "s3a": "s3", "s3n": "s3", "gs": "gs", "gcs": "gs"}
# File systems whose names are absolute paths.
_PATH_SCHEMES = frozenset({"file", "local", "hdfs"})


# --- Names ----------------------------------------------------------------------------------


def dataset_name(uri: str) -> tuple[str, str]:
    """
    ``(namespace, name)`` of a stored file or folder, by OpenLineage's naming rules (table above).

    ``uri`` is what the operators return: an absolute path or a URI (``str`` of an
    ``ObjectStoragePath``), possibly with an Airflow connection id as its user part.
    """
    scheme, separator, rest = uri.partition("://")
    if not separator:  # a plain absolute path: the worker's local file system
        return "file", posixpath.normpath(uri) if uri else "/"
    scheme = scheme.lower()
    authority, _, path = rest.partition("/")
    host = authority.rpartition("@")[2]  # Airflow's connection id is not part of the store
    if scheme in _PATH_SCHEMES:
        if scheme == "local":
            scheme = "file"
        namespace = f"{scheme}://{host}" if host else scheme
        return namespace, posixpath.normpath("/" + path)
    return f"{_BUCKET_SCHEMES.get(scheme, scheme)}://{host}", path.strip("/") or "/"


@dataclass(frozen=True)
class OutputRef:
    """One output dataset: a file, or a folder standing for ``file_count`` files (past the bound)."""

    namespace: str
    name: str
    file_count: int | None = None


def output_refs(uris: Iterable[str], *, limit: int = MAX_FILE_DATASETS) -> list[OutputRef]:
    """
    The stored files as datasets, each once, in order: one per file up to ``limit`` files, else one
    per folder (at most ``limit`` of them) with the number of files it got.
    """
    files = list(dict.fromkeys(dataset_name(uri) for uri in uris if uri))
    if len(files) <= limit:
        return [OutputRef(namespace, name) for namespace, name in files]
    folders: dict[tuple[str, str], int] = {}
    for namespace, name in files:
        folder = (namespace, posixpath.dirname(name.rstrip("/")) or "/")  # "/": a bucket's or disk's root
        folders[folder] = folders.get(folder, 0) + 1
    return [OutputRef(namespace, name, count) for (namespace, name), count in list(folders.items())[:limit]]


# --- The run facet --------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictionsSummary:
    """What the run facet says of a task's predictions: model, ids (bounded), images and cost."""

    model: str | None
    prediction_ids: tuple[str, ...]
    image_count: int
    cost: float | None = None
    currency: str | None = None

    def facet_fields(self, *, limit: int = MAX_PREDICTION_IDS) -> dict[str, Any]:
        """The facet's fields, camelCase as OpenLineage's are; at most ``limit`` ids."""
        return {
            "model": self.model,
            "predictionIds": list(self.prediction_ids[:limit]),
            "predictionCount": len(self.prediction_ids),
            "imageCount": self.image_count,
            "cost": self.cost,
            "currency": self.currency,
        }


def prediction_summary(prediction: Mapping[str, Any], *, model: str | None = None) -> PredictionsSummary:
    """The summary of one prediction (the create operator's return value, or a prediction's JSON)."""
    prediction_id = prediction.get("id")
    return PredictionsSummary(
        model=prediction.get("model") or model,
        prediction_ids=(prediction_id,) if isinstance(prediction_id, str) and prediction_id else (),
        image_count=image_count(prediction),
        **_cost_of(prediction),
    )


def batch_summary(model: str, entries: Iterable[Any], result: Mapping[str, Any]) -> PredictionsSummary:
    """
    The summary of a batch from its manifest entries (``batch.manifest.ManifestEntry``) and its
    return value: every prediction created (retried inputs' earlier ones too), the images of those
    that succeeded (stored files less the ``.json`` sidecar, else their output URLs), and the
    cost and currency when the return value has them.
    """
    ids: list[str] = []
    images = 0
    for entry in entries:
        ids.extend(pid for pid in (*entry.previous_ids, entry.prediction_id) if pid)
        if entry.succeeded:
            stored = entry.stored
            # No output has the extension .json (storage.extension_for): the one .json is the sidecar.
            images += len(entry.outputs) if stored is None else sum(not uri.endswith(".json") for uri in stored)
    return PredictionsSummary(
        model=model, prediction_ids=tuple(dict.fromkeys(ids)), image_count=images, **_cost_of(result)
    )


def _cost_of(value: Mapping[str, Any]) -> dict[str, Any]:
    """``cost`` and ``currency`` of a return value that has them (``None`` where the model has no price)."""
    cost, currency = value.get("cost"), value.get("currency")
    if not isinstance(cost, int | float) or isinstance(cost, bool):
        return {"cost": None, "currency": None}  # no cost, no currency: the facet has neither
    return {"cost": float(cost), "currency": currency if isinstance(currency, str) else None}


# --- OpenLineage objects (only when the provider asks) --------------------------------------


def operator_lineage(
    *,
    summary: PredictionsSummary | None,
    stored: Sequence[str] = (),
    also: Sequence[str] = (),
) -> OperatorLineage[Any, Any]:
    """
    The ``OperatorLineage`` an operator's ``get_openlineage_facets_on_complete`` returns.

    :param summary: the run facet's content; ``None`` for none.
    :param stored: the stored files, bounded by ``output_refs``.
    :param also: files reported whatever the bound (a batch's manifest).
    """
    from airflow.providers.common.compat.openlineage.facet import (
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage

    refs = output_refs(stored)
    seen = {(ref.namespace, ref.name) for ref in refs}
    refs += [ref for ref in output_refs(also) if (ref.namespace, ref.name) not in seen]
    outputs = [
        OutputDataset(
            namespace=ref.namespace,
            name=ref.name,
            outputFacets={}
            if ref.file_count is None
            else {"outputStatistics": OutputStatisticsOutputDatasetFacet(rowCount=None, fileCount=ref.file_count)},
        )
        for ref in refs
    ]
    run_facets = {} if summary is None else {RUN_FACET_NAME: _run_facet_class()(**summary.facet_fields())}
    return OperatorLineage(outputs=outputs, run_facets=run_facets)


@cache
def _run_facet_class() -> type[Any]:
    """The run facet's class, made on first use: its base class comes with OpenLineage."""
    from attrs import define
    from openlineage.client.facet_v2 import RunFacet

    @define
    class CometAPIPredictionsRunFacet(RunFacet):  # type: ignore[misc]
        """The predictions a CometAPI task made: model, ids (at most 100), count, images and cost."""

        model: str | None
        # camelCase, as the fields of OpenLineage's own facets are.
        predictionIds: list[str]
        predictionCount: int
        imageCount: int
        cost: float | None = None
        currency: str | None = None

    return CometAPIPredictionsRunFacet
