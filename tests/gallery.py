"""The gallery app over a run's records, for tests that read real stores through it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest


class FakeSession:
    """The run exists, its task instances have no state: all load_run asks of the database here."""

    def scalar(self, statement: Any) -> int:
        return 1

    def execute(self, statement: Any) -> list[Any]:
        return []


@contextlib.contextmanager
def gallery_over_records(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """
    The gallery app, signed in, over a run whose only records are ``values`` (``(TaskRef, XCom
    value)`` pairs, e.g. a batch's result); ``reads`` lists the text files (manifests) it read.
    """
    from fastapi.testclient import TestClient

    from airflow_provider_cometapi.plugins import files, runs
    from airflow_provider_cometapi.plugins.app import app
    from airflow_provider_cometapi.plugins.auth import require_dag_read
    from airflow_provider_cometapi.plugins.manifests import MANIFESTS

    values: list[Any] = []
    monkeypatch.setattr("airflow.utils.session.create_session", lambda: contextlib.nullcontext(FakeSession()))
    monkeypatch.setattr(runs, "_recorded_values", lambda session, dag_id, run_id, task: list(values))
    reads: list[str] = []
    real_open_text = files.open_text

    def counting_open_text(uri: str) -> str:
        reads.append(uri)
        return real_open_text(uri)

    monkeypatch.setattr(files, "open_text", counting_open_text)
    app.dependency_overrides[require_dag_read] = lambda: SimpleNamespace(name="viewer")
    MANIFESTS.clear()
    try:
        yield SimpleNamespace(values=values, reads=reads, client=TestClient(app))
    finally:
        app.dependency_overrides.clear()
        MANIFESTS.clear()
