"""
The Airflow plugin that adds an **Images** tab to the DAG run and task instance pages.

Registered through the provider info's ``plugins``. The api-server mounts the gallery app at
``/cometapi``; the two external views (AIP-68) show its pages in a tab, Airflow's UI filling in
the DAG, run, task and map index.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any
from urllib.parse import urlsplit

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/cometapi"


def _base_path() -> str:
    """The path of ``[api] base_url`` (empty, or ``/airflow`` behind a proxy), before the prefix."""
    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def external_views(base_path: str = "") -> list[dict[str, str]]:
    """The Images tabs: the run's images on the run page, the task's (map index's) on the task's."""
    gallery = f"{base_path}{URL_PREFIX}/gallery/{{DAG_ID}}/{{RUN_ID}}"
    return [
        {"name": "Images", "href": gallery, "destination": "dag_run", "url_route": "cometapi-run-images"},
        {
            "name": "Images",
            "href": f"{gallery}/{{TASK_ID}}?map_index={{MAP_INDEX}}",
            "destination": "task_instance",
            "url_route": "cometapi-task-images",
        },
    ]


class LazyGalleryApp:
    """
    The gallery's ASGI app, imported on its first request.

    Airflow loads every plugin wherever it looks for plugins, workers included (the hook
    lineage collector does on a task's first ``ObjectStoragePath`` write); building the FastAPI
    app there imported the api-server's security stack, seconds of CPU for every task that
    stores a file. Only the api-server ever sends this app a request.
    """

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if self._app is None:
            from airflow_provider_cometapi.plugins.app import app

            self._app = app
        await self._app(scope, receive, send)


def _fastapi_apps() -> list[dict[str, object]]:
    return [{"app": LazyGalleryApp(), "url_prefix": URL_PREFIX, "name": "CometAPI images"}]


class CometAPIPlugin(AirflowPlugin):
    """The Images tab and the gallery app behind it."""

    name = "cometapi"
    fastapi_apps = _fastapi_apps()
    external_views = external_views(_base_path())
