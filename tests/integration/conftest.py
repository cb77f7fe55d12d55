"""Airflow for real: a metadata DB made once per session, DAGs run with ``dag.test()``."""

from __future__ import annotations

import importlib.metadata
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import S3_BUCKET, set_connection

TEST_DAGS = Path(__file__).parent / "dags"
STARTUP_BOUND = 30  # s for the in-process execution API's startup (it takes milliseconds)


def _airflow_minor() -> tuple[int, int]:
    major, minor = importlib.metadata.version("apache-airflow").split(".")[:2]
    return int(major), int(minor)


@pytest.fixture(scope="session", autouse=True)
def airflow_3_2_execution_api_kept_up() -> Any:
    """
    Airflow 3.2's ``dag.test()`` fails every task with ``'State' object has no attribute
    'svcs_registry'``; this works around it, on 3.2 alone. Each task builds an
    ``InProcessExecutionAPI``, takes its transport and drops it. Three things go wrong:

    - the app's startup (lifespan) is scheduled on a2wsgi's loop and not waited for;
    - that startup needs ``[api_auth] jwt_secret``, which a fresh AIRFLOW_HOME lacks: it fails,
      unseen since nobody waits;
    - the lifespan's exit stack belongs to the dropped ``InProcessExecutionAPI``: when that is
      garbage-collected the lifespan unwinds, and svcs (26.x) takes its registry off the app's
      state on exit, while the transport still serves the task's requests.

    So: a throwaway jwt_secret, the API handed out once its startup has run, and kept alive as
    long as its transport. Airflow 3.3 waits for the startup and ties the lifespan to the
    transport (apache/airflow#68840) and needs no secret in-process (apache/airflow#68980);
    nothing is changed on 3.3, nor on 3.1. docs/versions.md says so.
    """
    if _airflow_minor() != (3, 2):
        yield
        return
    from airflow.sdk.execution_time import supervisor

    in_process_api_server = supervisor.in_process_api_server

    def kept_up_api_server() -> Any:
        api = in_process_api_server()
        transport = api.transport  # a cached property: it schedules the startup, unawaited
        deadline = time.monotonic() + STARTUP_BOUND
        while "svcs_registry" not in api.app.state._state:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Airflow's in-process execution API did not start in {STARTUP_BOUND} s")
            time.sleep(0.005)
        transport._cometapi_api = api  # the lifespan lives as long as the transport that needs it
        return api

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_hex(32))
        patch.setattr(supervisor, "in_process_api_server", kept_up_api_server)
        yield


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Migrate the session's metadata DB (the root conftest points AIRFLOW_HOME at a temp dir)."""
    assert "AIRFLOW_HOME" in os.environ, "tests/conftest.py must set AIRFLOW_HOME before Airflow is imported"
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ.copy()
    )


def load_dags(folder: Path) -> Any:
    """The folder's DAGs in a DagBag, which moved to ``airflow.dag_processing`` in Airflow 3.2."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder))
    assert not bag.import_errors, bag.import_errors
    return bag


@pytest.fixture(scope="session")
def dagbag(airflow_db):
    return load_dags(TEST_DAGS)


class DagRunResult:
    """What a test asserts on after ``dag.test()``: states and XComs read from the metadata DB."""

    def __init__(self, dag_run: Any) -> None:
        self.dag_run = dag_run
        self.state = str(dag_run.state)
        self.task_states = {(ti.task_id, ti.map_index): str(ti.state) for ti in dag_run.get_task_instances()}

    def xcom(self, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        with create_session() as session:
            row = session.scalars(
                XComModel.get_many(
                    run_id=self.dag_run.run_id,
                    key=key,
                    dag_ids=self.dag_run.dag_id,
                    task_ids=task_id,
                    map_indexes=map_index,
                )
            ).first()
            return None if row is None else XComModel.deserialize_value(row)


@pytest.fixture
def run_dag(dagbag, cometapi_conn):
    """Run a test DAG once against the (reset) emulator and return its :class:`DagRunResult`."""

    def run(dag_id: str) -> DagRunResult:
        return DagRunResult(dagbag.get_dag(dag_id).test())

    return run


# --- S3 (moto in server mode) ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """
    A real S3-compatible server (moto in server mode) on a free loopback port, one per session:
    the file systems Airflow and s3fs cache keep the endpoint they were made with.
    """
    port = _free_port()
    server = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """The connection ``aws_moto`` to it, the bucket ``S3_BUCKET`` made, and a boto3 client."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    set_connection(
        monkeypatch,
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
        },
        conn_id="aws_moto",
    )
    boto3 = pytest.importorskip("boto3")
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=S3_BUCKET)
    return client
