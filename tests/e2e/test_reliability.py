"""
Reliability and secrets in a real deployment (LocalExecutor, scheduler, triggerer, PostgreSQL).

- A task process killed mid-wait: its retry resumes the same prediction (Airflow 3.3's task
  state store), so one prediction is paid for.
- The gateway going away while tasks are deferred, and coming back: every task succeeds.
- After DAGs that succeed and fail in the usual ways, the API key appears nowhere Airflow
  keeps or shows anything: task and trigger logs, component output, the whole metadata
  database (XComs, rendered template fields, task instances...) and the serialized trigger
  rows, sampled while the tasks were deferred.
"""

from __future__ import annotations

import base64
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from airflow_provider_cometapi.emulator import EmulatorProcess
from airflow_provider_cometapi.version_compat import AIRFLOW_V_3_3_PLUS
from tests.e2e.harness import REPO, AirflowStack, pg_dump, psql_query
from tests.e2e.test_local_executor import wait_for_state

SECRET_KEY = "sk-e2e-7d41c9b2e8f04a6b"
FERNET_KEY = Fernet.generate_key().decode()


@pytest.fixture(scope="module")
def gateway() -> Iterator[EmulatorProcess]:
    with EmulatorProcess(api_key=SECRET_KEY, duration=12.0) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def stack(tmp_path_factory, gateway) -> Iterator[AirflowStack]:
    home = tmp_path_factory.mktemp("airflow-e2e-reliability")
    env = {
        **gateway.airflow_env(),
        "AIRFLOW_VAR_COMETAPI_STORAGE_ROOT": (home / "images").as_uri(),
        "AIRFLOW__CORE__PARALLELISM": "4",
        # Encrypted trigger rows, as in production; the test decrypts its samples to search them.
        "AIRFLOW__CORE__FERNET_KEY": FERNET_KEY,
    }
    with AirflowStack(home, [REPO / "dags_examples", REPO / "tests" / "e2e" / "dags"], env=env) as running:
        yield running


@pytest.fixture
def emulator(gateway) -> EmulatorProcess:
    gateway.wait_until_reachable()
    gateway.reset()
    return gateway


def task_process(ti_id: str) -> int | None:
    """The pid of the process running a task instance (the task runner names itself after it)."""
    wanted = f"airflow worker -- {ti_id}"
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").startswith(wanted):
                    return int(entry.name)
            except OSError:
                continue
    return None


@pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="the task state store arrived in Airflow 3.3")
def test_a_worker_killed_mid_task_is_resumed_not_paid_twice(stack, emulator):
    run_id = stack.trigger("e2e_durable")
    wait_for_state(stack, "e2e_durable", run_id, "generate", "running")
    deadline = time.monotonic() + 60
    while emulator.stats(detail=False)["creates"] == 0:
        assert time.monotonic() < deadline, "the task never created its prediction"
        time.sleep(0.2)
    time.sleep(2)  # mid-wait: a few polls in
    ti_id = stack.api("GET", f"dags/e2e_durable/dagRuns/{run_id}/taskInstances/generate")["id"]
    pid = task_process(ti_id)
    assert pid is not None, "no process runs the task"
    os.kill(pid, signal.SIGKILL)

    assert stack.wait_for_run("e2e_durable", run_id, timeout=180) == "success"
    ti = stack.api("GET", f"dags/e2e_durable/dagRuns/{run_id}/taskInstances/generate")
    assert ti["try_number"] == 2
    stats = emulator.stats()
    assert stats["creates"] == 1, "the retry must resume the prediction, not pay for a second one"
    (prediction_id,) = stats["predictions"]
    assert f"Resuming prediction {prediction_id}" in stack.task_log("e2e_durable", run_id, "generate", try_number=2)


def test_the_gateway_going_away_while_tasks_are_deferred(stack, emulator):
    seen: dict[str, set[str]] = {}
    run_id = stack.trigger("e2e_outage")
    deadline = time.monotonic() + 120
    while sum(1 for ti in stack.task_instances("e2e_outage", run_id) if ti["state"] == "deferred") < 4:
        assert time.monotonic() < deadline, "the tasks never all deferred"
        time.sleep(0.5)
    emulator.outage(10)
    time.sleep(10.5)
    emulator.wait_until_reachable()
    assert stack.wait_for_run("e2e_outage", run_id, timeout=180, seen_states=seen) == "success", seen
    stats = emulator.stats(detail=False)
    assert stats["creates"] == 4
    assert stats["cancels"] == 0
    log = stack.task_log("e2e_outage", run_id, "generate", map_index=0)
    assert "Could not reach CometAPI" in log  # the outage was met, and ridden out


class TriggerRowSampler:
    """Reads the trigger table while tasks are deferred (rows go once their trigger fires)."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.fernet = Fernet(FERNET_KEY.encode())
        self.rows: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for line in psql_query("SELECT id, kwargs FROM trigger", self.database):
                trigger_id, _, stored = line.partition("|")
                if trigger_id.isdigit() and stored:
                    # Airflow may store a row unencrypted (JSON) on some paths; else Fernet.
                    plain = stored if stored.startswith("{") else self.fernet.decrypt(stored.encode()).decode()
                    self.rows[int(trigger_id)] = plain
            self._stop.wait(0.3)

    def __enter__(self) -> TriggerRowSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_the_api_key_is_nowhere(stack, emulator):
    runs = []
    with TriggerRowSampler(stack.database) as sampler:
        for dag_id in ("e2e_create_then_sense", "cometapi_sensor_pattern", "e2e_failures"):
            runs.append((dag_id, stack.trigger(dag_id)))
        for dag_id, run_id in runs:
            stack.wait_for_run(dag_id, run_id, timeout=240)
    forms = {SECRET_KEY, base64.b64encode(SECRET_KEY.encode()).decode(), SECRET_KEY[::-1]}

    # The serialized trigger rows: real content was read (the prediction ids are in it), no key.
    assert sampler.rows, "no trigger row was sampled while tasks were deferred"
    assert any("prediction_id" in row for row in sampler.rows.values())
    for row in sampler.rows.values():
        assert not any(form in row for form in forms), row

    # Task logs (with their trigger parts) as users read them in the UI, failures included.
    for dag_id, run_id in runs:
        for ti in stack.task_instances(dag_id, run_id):
            for try_number in range(1, max(ti["try_number"], 1) + 1):
                log = stack.task_log(dag_id, run_id, ti["task_id"], try_number=try_number, map_index=ti["map_index"])
                assert not any(form in log for form in forms), (dag_id, ti["task_id"])
    failures = stack.task_log("e2e_failures", runs[2][1], "unknown_model")
    assert "Unknown model" in failures  # the raised exception's text is among what was searched

    # Every file Airflow wrote (log files, component output, stored images and sidecars).
    searched = 0
    for path in stack.home.rglob("*"):
        if path.is_file() and path.name != "passwords.json":
            content = path.read_bytes()
            assert not any(form.encode() in content for form in forms), path
            searched += 1
    assert searched > 10

    # The whole metadata database: XComs, rendered template fields, task instances, DAG runs...
    dump = pg_dump(stack.database)
    assert "rendered_task_instance_fields" in dump and "prediction_id" in dump
    assert not any(form in dump for form in forms)
