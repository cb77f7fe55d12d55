"""
Shared fixtures. The emulator runs once per session as a subprocess on a free loopback port.

Airflow is configured here, before anything imports it: a throwaway AIRFLOW_HOME (its SQLite
metadata DB is made by the integration tier) and two DAG bundles, the example DAGs and the
test DAGs, so that ``dag.test()`` can run either.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Imports nothing from Airflow, so it may come before the configuration below.
from airflow_provider_cometapi.emulator.testing import EmulatorProcess

_REPO = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="cometapi-tests-airflow-")
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
os.environ.update(
    {
        "AIRFLOW_HOME": _AIRFLOW_HOME,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # dag.test() has no executor, so no stale defer-exit report to wait out (apache/airflow#72716).
        "AIRFLOW__COMETAPI__MIN_DEFER_SECONDS": "0",
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
            [
                {
                    "name": name,
                    "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                    "kwargs": {"path": str(_REPO / path)},
                }
                for name, path in (("cometapi_examples", "dags_examples"), ("cometapi_tests", "tests/integration/dags"))
            ]
        ),
    }
)
# A developer's own settings must not leak into the tests.
for _name in ("AIRFLOW_CONN_COMETAPI_DEFAULT", "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "COMETAPI_API_KEY"):
    os.environ.pop(_name, None)

pytest_plugins = ["tests.fixtures"]

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="session")
def emulator_process() -> Iterator[EmulatorProcess]:
    """One emulator for the whole run: predictions take 0.5 s (0.1 s of it ``starting``)."""
    with EmulatorProcess(api_key="test-key", duration=0.5, starting_for=0.1) as proc:
        yield proc


@pytest.fixture
def emulator(emulator_process: EmulatorProcess) -> EmulatorProcess:
    """The session emulator with no predictions, counters or fault rules left by earlier tests."""
    emulator_process.reset()
    return emulator_process
