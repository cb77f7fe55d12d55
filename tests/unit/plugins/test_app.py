"""The gallery app's routes without a session, and the auth manager requests it makes."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from airflow_provider_cometapi.plugins.app import app
from airflow_provider_cometapi.plugins.auth import authorization_requests

ROUTES = [
    "/gallery/d/r",
    "/gallery/d/r/t",
    "/gallery/d/r/t?map_index=1",
    "/gallery/d/r/t/view/p1_0",
    "/gallery/d/r/t/files/p1_0.webp",
    "/gallery/d/r/t/files/p1_0.webp?map_index=oops",
]


@pytest.mark.parametrize("path", ROUTES)
def test_no_session_gets_401_and_no_page(path: str):
    answer = TestClient(app).get(path)
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/json"


def test_the_app_has_no_open_documentation_routes():
    client = TestClient(app)
    assert all(client.get(path).status_code == 404 for path in ("/docs", "/redoc", "/openapi.json", "/"))


def test_reading_a_dag_means_reading_its_runs_task_instances_and_xcoms():
    requests = authorization_requests("my_dag", None)
    assert [str(r.get("access_entity", "DAG")).rsplit(".", 1)[-1] for r in requests] == [
        "DAG", "RUN", "TASK_INSTANCE", "XCOM",
    ]  # fmt: skip
    assert {r["method"] for r in requests} == {"GET"}
    assert {r["details"].id for r in requests} == {"my_dag"}
