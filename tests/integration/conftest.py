"""Airflow for real: a metadata DB made once per session, DAGs run with ``dag.test()``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TEST_DAGS = Path(__file__).parent / "dags"


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
