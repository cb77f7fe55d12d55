"""The end-to-end tier: a real Airflow deployment per module (see harness.py). Run with `make e2e`."""

from __future__ import annotations

import pytest

from airflow_provider_cometapi.emulator import EmulatorProcess
from tests.e2e.harness import REPO, AirflowStack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="module")
def e2e_emulator():
    # Predictions last longer than a task takes to defer, as real FLUX ones do under load.
    with EmulatorProcess(api_key="e2e-secret-key-4f1c2a", duration=12.0) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def stack(tmp_path_factory, e2e_emulator):
    home = tmp_path_factory.mktemp("airflow-e2e")
    env = {
        **e2e_emulator.airflow_env(),
        "AIRFLOW_VAR_COMETAPI_STORAGE_ROOT": (home / "images").as_uri(),
        # Two worker slots: deferred predictions must not need more.
        "AIRFLOW__CORE__PARALLELISM": "2",
    }
    with AirflowStack(home, [REPO / "dags_examples", REPO / "tests" / "e2e" / "dags"], env=env) as running:
        yield running


@pytest.fixture
def emulator(e2e_emulator):
    e2e_emulator.reset()
    return e2e_emulator
