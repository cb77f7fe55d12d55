"""
The gallery's FastAPI app, mounted by Airflow's api-server at ``/cometapi``.

Routes (every one behind ``require_dag_read``, the image bytes included):

* ``GET /gallery/{dag_id}/{dag_run_id}``: every image the run generated or stored.
* ``GET /gallery/{dag_id}/{dag_run_id}/{task_id}?map_index=N``: one task's (one map index's).
* ``GET /gallery/{dag_id}/{dag_run_id}/{task_id}/view/{prediction_id}_{n}?map_index=N``: one
  image at full size with everything known about it.
* ``GET /gallery/{dag_id}/{dag_run_id}/{task_id}/files/{file name}?map_index=N``: the bytes of
  an output that task instance recorded it stored. The name is looked up among the URIs the
  task instance recorded; it is never turned into a path.

Pages take ``page`` (from 1) and ``per_page`` (1..500, default 60).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from airflow_provider_cometapi.plugins import files, pages
from airflow_provider_cometapi.plugins.auth import DagReader
from airflow_provider_cometapi.plugins.records import (
    DEFAULT_PAGE_SIZE,
    IMAGE_KEY,
    MAX_PAGE_SIZE,
    OUTPUT_NAME,
    PREDICTION_ID,
    Card,
    TaskRef,
    for_task,
    page_of,
)
from airflow_provider_cometapi.plugins.runs import RunImages, load_run, with_sidecar_info

# Pages may show the gateway's images (http/https/data) and stored ones through this app; they
# run no script, and only Airflow's own pages may frame them.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self' data: https: http:; style-src 'unsafe-inline'; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
FILE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, max-age=300",
}
_UNPROCESSABLE = 422  # named _CONTENT or _ENTITY depending on the Starlette release
UNSET_MAP_INDEX = "{MAP_INDEX}"  # what the UI leaves in the tab's URL of a task that is not mapped

app = FastAPI(
    title="CometAPI images",
    description="The images a DAG run generated or stored, for the Images tab of Airflow's UI.",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)

PageNumber = Annotated[int, Query(ge=1, le=1_000_000)]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
MapIndex = Annotated[str | None, Query(max_length=12)]


def _map_index(value: str | None) -> int | None:
    if value is None or value in ("", UNSET_MAP_INDEX):
        return None
    try:
        index = int(value)
    except ValueError:
        raise HTTPException(_UNPROCESSABLE, "map_index must be a whole number") from None
    if index < -1:
        raise HTTPException(_UNPROCESSABLE, "map_index must be -1 or more")
    return index


def _run(dag_id: str, run_id: str, task: TaskRef | None = None) -> RunImages:
    run = load_run(dag_id, run_id, task)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such DAG run.")
    return run


def _links(request: Request, dag_id: str, run_id: str) -> pages.Links:
    return pages.Links(str(request.scope.get("root_path", "")).rstrip("/"), dag_id, run_id)


def _html(body: str, code: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=code, headers=PAGE_HEADERS)


def _gallery(
    request: Request, dag_id: str, run_id: str, task_id: str | None, map_index: int | None, page: int, per_page: int
) -> HTMLResponse:
    run = _run(dag_id, run_id)
    shown = page_of(for_task(run.cards, task_id, map_index), page, per_page)
    shown = type(shown)(with_sidecar_info(shown.cards), shown.number, shown.count, shown.total, shown.size)
    links = _links(request, dag_id, run_id)
    return _html(pages.gallery_page(shown, links, run.task_states, task_id=task_id, map_index=map_index))


@app.get("/gallery/{dag_id}/{dag_run_id}", response_class=HTMLResponse, name="run_gallery")
def run_gallery(
    request: Request,
    dag_id: str,
    dag_run_id: str,
    _user: DagReader,
    page: PageNumber = 1,
    per_page: PageSize = DEFAULT_PAGE_SIZE,
) -> HTMLResponse:
    """Every image the run generated or stored."""
    return _gallery(request, dag_id, dag_run_id, None, None, page, per_page)


@app.get("/gallery/{dag_id}/{dag_run_id}/{task_id}", response_class=HTMLResponse, name="task_gallery")
def task_gallery(
    request: Request,
    dag_id: str,
    dag_run_id: str,
    task_id: str,
    _user: DagReader,
    map_index: MapIndex = None,
    page: PageNumber = 1,
    per_page: PageSize = DEFAULT_PAGE_SIZE,
) -> HTMLResponse:
    """The images of one task (of one map index with ``map_index``)."""
    return _gallery(request, dag_id, dag_run_id, task_id, _map_index(map_index), page, per_page)


def _card(run: RunImages, task: TaskRef, key: str) -> Card:
    for card in for_task(run.cards, task.task_id, task.map_index):
        if card.key == key:
            return card
    raise HTTPException(status.HTTP_404_NOT_FOUND, "This task instance recorded no such image.")


@app.get("/gallery/{dag_id}/{dag_run_id}/{task_id}/view/{key}", response_class=HTMLResponse, name="image_view")
def image_view(
    request: Request, dag_id: str, dag_run_id: str, task_id: str, key: str, _user: DagReader, map_index: MapIndex = None
) -> HTMLResponse:
    """One image at full size, with its prompt, input and where it is stored."""
    if not (IMAGE_KEY.fullmatch(key) or PREDICTION_ID.fullmatch(key)):  # an output, or a prediction without one
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such image.")
    index = _map_index(map_index)
    task = TaskRef(task_id, -1 if index is None else index)
    run = _run(dag_id, dag_run_id)
    (card,) = with_sidecar_info([_card(run, task, key)])
    return _html(pages.view_page(card, _links(request, dag_id, dag_run_id), task, run.task_states))


@app.get("/gallery/{dag_id}/{dag_run_id}/{task_id}/files/{name}", name="image_file")
def image_file(
    dag_id: str, dag_run_id: str, task_id: str, name: str, _user: DagReader, map_index: MapIndex = None
) -> Response:
    """The bytes of an output this task instance recorded it stored."""
    if not OUTPUT_NAME.fullmatch(name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not an output's file name.")
    index = _map_index(map_index)
    task = TaskRef(task_id, -1 if index is None else index)
    # Only this task instance's records: the file must be one of the URIs it recorded.
    run = _run(dag_id, dag_run_id, task)
    recorded = [stored for card in run.cards for stored in card.files if stored.task == task and stored.name == name]
    if not recorded:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "This task instance recorded no such file.")
    stored = recorded[0]
    try:
        chunks, size = files.open_output(stored)
    except files.StoredFileError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"The stored file cannot be read: {error}") from None
    headers = {**FILE_HEADERS, "Content-Disposition": f'inline; filename="{stored.name}"'}
    if size is not None:
        headers["Content-Length"] = str(size)
    return StreamingResponse(chunks, media_type=files.media_type(stored), headers=headers)
