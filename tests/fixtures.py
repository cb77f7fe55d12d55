"""Fixtures shared by the unit and integration tiers (loaded by tests/conftest.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_cometapi.retry import RetryPolicy

# Real backoff shape, shorter waits: retry tests stay fast without mocking time.
# The bucket the S3 tests make on their moto server (tests/integration/conftest.py).
S3_BUCKET = "generated-images"

FAST_RETRIES = RetryPolicy(max_attempts=4, max_elapsed=15, backoff_base=0.05, backoff_max=0.2)


class TaskInstance:
    """The part of a task instance an operator's ``execute`` touches outside a DAG run: a first try."""

    try_number = 1
    max_tries = 0

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def set_connection(monkeypatch: pytest.MonkeyPatch, conn: dict | str, conn_id: str = "cometapi_default") -> None:
    """Define an Airflow connection the way a DAG author or CI would: an environment variable."""
    value = conn if isinstance(conn, str) else json.dumps(conn)
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value)


@pytest.fixture
def cometapi_conn(emulator, monkeypatch):
    """The emulator, reset, reachable as the default connection."""
    set_connection(monkeypatch, emulator.connection_dict())
    return emulator
