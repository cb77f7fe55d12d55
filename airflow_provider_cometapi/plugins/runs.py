"""
Loading what one DAG run recorded from Airflow's metadata database, on the api-server.

The recorded values are the run's XComs (every key: the create operator's result and
``prediction_id``, the storage operator's URIs...) and the ``extra`` of the asset events its
tasks emitted. They are read as the REST API reads them (``XComModel.deserialize_value``): with
a custom XCom backend that keeps references in the database, only values it stored inline are
seen.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from airflow_provider_cometapi.plugins import files
from airflow_provider_cometapi.plugins.manifests import MANIFESTS
from airflow_provider_cometapi.plugins.records import (
    Card,
    PredictionInfo,
    Reader,
    Record,
    TaskRef,
    assemble,
    read_all,
    read_predictions,
    read_stored_files,
)

# records.READERS, with batch manifests read through the cache: a page and each of its images'
# requests read the run's records again, and a manifest may be 64 MiB.
READERS: tuple[Reader, ...] = (read_predictions, read_stored_files, MANIFESTS)


@dataclass(frozen=True)
class RunImages:
    """The cards of one run, and the state of each of its task instances."""

    dag_id: str
    run_id: str
    cards: list[Card]
    task_states: dict[TaskRef, str] = field(default_factory=dict)


def _recorded_values(session: Any, dag_id: str, run_id: str, task: TaskRef | None) -> list[tuple[TaskRef, Any]]:
    from airflow.models.asset import AssetEvent
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    xcoms = select(XComModel.task_id, XComModel.map_index, XComModel.value).where(
        XComModel.dag_id == dag_id, XComModel.run_id == run_id
    )
    events = select(AssetEvent.source_task_id, AssetEvent.source_map_index, AssetEvent.extra).where(
        AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id
    )
    if task is not None:
        xcoms = xcoms.where(XComModel.task_id == task.task_id, XComModel.map_index == task.map_index)
        events = events.where(AssetEvent.source_task_id == task.task_id, AssetEvent.source_map_index == task.map_index)
    values: list[tuple[TaskRef, Any]] = []
    for row in session.execute(xcoms.order_by(XComModel.timestamp, XComModel.task_id, XComModel.map_index)):
        try:
            value = XComModel.deserialize_value(row)
        except Exception:  # a value this process cannot decode is not an image record
            continue
        values.append((TaskRef(row.task_id, row.map_index), value))
    for event in session.execute(events.order_by(AssetEvent.timestamp)):
        if event.source_task_id:
            values.append((TaskRef(event.source_task_id, _index(event.source_map_index)), event.extra))
    return values


def _index(map_index: int | None) -> int:
    return -1 if map_index is None else int(map_index)


def load_run(
    dag_id: str, run_id: str, task: TaskRef | None = None, readers: Iterable[Reader] = READERS
) -> RunImages | None:
    """
    The run's cards (only those ``task`` recorded, when given); None when there is no such run.

    Reads the database only: no file is opened here (a page opens sidecars for the cards it
    shows, ``with_sidecar_info``).
    """
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        exists = session.scalar(select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        if exists is None:
            return None
        values = _recorded_values(session, dag_id, run_id, task)
        states = {
            TaskRef(row.task_id, row.map_index): str(row.state)
            for row in session.execute(
                select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state).where(
                    TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
                )
            )
        }
        records = read_all(values, files.open_text, readers)
        bare = {record.task for record in records if _without_request(record)}
        rendered = _rendered_requests(session, dag_id, run_id, bare) if bare else {}
    records = [_with_request(record, rendered) for record in records]
    return RunImages(dag_id, run_id, assemble(records), states)


def _rendered_requests(session: Any, dag_id: str, run_id: str, tasks: set[TaskRef]) -> dict[TaskRef, dict[str, Any]]:
    """The rendered ``model`` and ``input`` of these task instances (what they asked the gateway for)."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as Rendered
    from sqlalchemy import select

    rows = session.execute(
        select(Rendered.task_id, Rendered.map_index, Rendered.rendered_fields).where(
            Rendered.dag_id == dag_id, Rendered.run_id == run_id, Rendered.task_id.in_({t.task_id for t in tasks})
        )
    )
    found = {}
    for row in rows:
        task = TaskRef(row.task_id, row.map_index)
        if task in tasks and isinstance(row.rendered_fields, dict):
            found[task] = row.rendered_fields
    return found


def _without_request(record: Record) -> bool:
    # A bare prediction id, or the ``failed_prediction`` record (which keeps no input).
    return isinstance(record, PredictionInfo) and not record.input


def _with_request(record: Record, rendered: dict[TaskRef, dict[str, Any]]) -> Record:
    """A prediction recorded without its input takes the model and input its task rendered."""
    if not isinstance(record, PredictionInfo) or record.input or record.task not in rendered:
        return record
    fields = rendered[record.task]
    model, model_input = fields.get("model"), fields.get("input")
    return replace(
        record,
        model=record.model or (model[:200] if isinstance(model, str) else None),
        input=model_input if isinstance(model_input, dict) else {},
    )


def with_sidecar_info(cards: Iterable[Card]) -> list[Card]:
    """Cards without the prediction's metadata take it from its sidecar (one read per sidecar)."""
    read: dict[str, PredictionInfo | None] = {}
    enriched = []
    for card in cards:
        if (card.info is None or card.info.status is None) and card.sidecar is not None:
            if card.sidecar.uri not in read:
                read[card.sidecar.uri] = files.read_sidecar(card.sidecar)
            if (info := read[card.sidecar.uri]) is not None:
                card = card.with_info(replace(info, task=card.info.task if card.info else info.task))
        enriched.append(card)
    return enriched
