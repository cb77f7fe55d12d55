"""A distributed deployment: CeleryExecutor (Redis broker, PostgreSQL results), two workers, two triggerers."""

from __future__ import annotations

import random
import signal
import subprocess
import time

import pytest

from airflow_provider_cometapi.emulator import EmulatorProcess
from tests.e2e.harness import PG_URL, REPO, AirflowStack

pytest.importorskip("airflow.providers.celery")

REDIS_DB = random.randint(1, 15)


@pytest.fixture(scope="module")
def celery_stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-celery")
    with EmulatorProcess(api_key="e2e-celery-secret-9d3b", duration=12.0) as emulator:
        broker = f"redis://127.0.0.1:6379/{REDIS_DB}"
        subprocess.run(["redis-cli", "-n", str(REDIS_DB), "FLUSHDB"], check=True, capture_output=True)
        stack = AirflowStack(
            home,
            [REPO / "tests" / "e2e" / "dags"],
            env={
                **emulator.airflow_env(),
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__PARALLELISM": "8",
                "AIRFLOW__CELERY__BROKER_URL": broker,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
            },
            components=(
                "api-server",
                "scheduler",
                "dag-processor",
                "triggerer",
                "triggerer",
                "celery worker",
                "celery worker",
            ),
        )
        # The result backend lives in the stack's own database.
        stack.env["AIRFLOW__CELERY__RESULT_BACKEND"] = f"db+{PG_URL}/{stack.database}"
        with stack:
            yield stack, emulator
        subprocess.run(["redis-cli", "-n", str(REDIS_DB), "FLUSHDB"], check=False, capture_output=True)


def test_batch_survives_losing_a_triggerer(celery_stack):
    stack, emulator = celery_stack
    run_id = stack.trigger("e2e_celery_batch")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        deferred = [ti for ti in stack.task_instances("e2e_celery_batch", run_id) if ti["state"] == "deferred"]
        if len(deferred) >= 10:
            break
        time.sleep(1)
    assert len(deferred) >= 10, "the batch never got deferred"
    # Kill one triggerer outright, as a lost machine would: its triggers move to the other one.
    stack.stop_component("triggerer-3", sig=signal.SIGKILL)
    assert stack.wait_for_run("e2e_celery_batch", run_id, timeout=300) == "success"
    stats = emulator.stats()
    assert stats["creates"] == 20
    assert len({p["prompt"] for p in stats["predictions"].values()}) == 20
    assert all(p["status"] == "succeeded" for p in stats["predictions"].values())
    assert stats["cancels"] == 0
