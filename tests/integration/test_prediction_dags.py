"""CreatePredictionOperator and PredictionSensor in real Airflow runs (dag.test()) against the emulator."""

from __future__ import annotations

import re

import pytest

from airflow_provider_cometapi.polling import MAX_FAILED_POLLS
from airflow_provider_cometapi.version_compat import AIRFLOW_V_3_3_PLUS
from tests.fixtures import set_connection

pytestmark = pytest.mark.integration

SUCCESS, FAILED, SKIPPED = "success", "failed", "skipped"


def stats(emulator):
    return emulator.stats()


def test_deferrable_operator(run_dag, cometapi_conn, capfd):
    result = run_dag("t_deferrable")
    assert result.state == SUCCESS
    prediction = result.xcom("generate")
    assert prediction["status"] == "succeeded"
    assert result.xcom("generate", key="prediction_id") == prediction["id"]
    assert isinstance(prediction["output"], list)
    assert all(isinstance(url, str) for url in prediction["output"])
    assert "logs" not in prediction
    assert prediction["input"]["seed"] == 7
    emulator = stats(cometapi_conn)
    assert emulator["creates"] == 1
    assert emulator["polls"] >= 1
    log = capfd.readouterr().out
    assert "DEFERRED" in log
    if AIRFLOW_V_3_3_PLUS:  # Airflow 3.1's dag.test() runs the trigger inline without printing its log
        # The trigger says the statuses it saw once, with the outcome.
        assert re.search(rf"Prediction {prediction['id']} succeeded .*Statuses: (\w+, )*succeeded\.", log)
        assert "Total safe images" in log  # the prediction's own log lines reach the task log


def test_worker_polling_without_deferral(run_dag, cometapi_conn, capfd):
    result = run_dag("t_worker_polling")
    assert result.state == SUCCESS
    assert result.xcom("generate")["status"] == "succeeded"
    assert stats(cometapi_conn)["creates"] == 1
    assert "DEFERRED" not in capfd.readouterr().out


def test_no_wait_returns_the_created_prediction(run_dag, cometapi_conn):
    result = run_dag("t_no_wait")
    assert result.state == SUCCESS
    assert result.xcom("generate")["status"] == "starting"
    assert stats(cometapi_conn)["polls"] == 0


def test_prefer_wait_completes_without_polling_or_deferral(run_dag, cometapi_conn, capfd):
    result = run_dag("t_prefer_wait")
    assert result.state == SUCCESS
    assert result.xcom("generate")["status"] == "succeeded"
    assert stats(cometapi_conn)["polls"] == 0
    assert "DEFERRED" not in capfd.readouterr().out


def test_mapped_batch_creates_one_prediction_per_input(run_dag, cometapi_conn):
    result = run_dag("t_mapped")
    assert result.state == SUCCESS
    assert [result.task_states[("generate", i)] for i in range(3)] == [SUCCESS] * 3
    predictions = [result.xcom("generate", map_index=i) for i in range(3)]
    emulator = stats(cometapi_conn)
    assert emulator["creates"] == 3
    assert sorted(p["prompt"] for p in emulator["predictions"].values()) == ["a bird", "a cat", "a dog"]
    assert {p["id"] for p in predictions} == set(emulator["predictions"])
    assert predictions[2]["input"]["aspect_ratio"] == "16:9"


def test_model_and_input_are_templated(run_dag, cometapi_conn):
    result = run_dag("t_templated")
    assert result.state == SUCCESS
    (recorded,) = stats(cometapi_conn)["predictions"].values()
    assert recorded["model"] == "black-forest-labs/flux-schnell"
    assert recorded["prompt"].startswith("a lighthouse on 20")


@pytest.mark.parametrize("outcome", ["failed", "canceled", "aborted"])
def test_unsuccessful_prediction_fails_the_task_with_its_error(run_dag, cometapi_conn, capfd, outcome):
    result = run_dag(f"t_{outcome}")
    assert result.state == FAILED
    assert result.task_states[("generate", -1)] == FAILED
    log = capfd.readouterr().out
    assert "PredictionFailedError" in log
    if outcome != "canceled":
        assert f"emulated {outcome} error" in log
    assert stats(cometapi_conn)["creates"] == 1
    # Kept though the task failed: the Images tab shows the prediction's error from it.
    record = result.xcom("generate", key="failed_prediction")
    assert record["id"] == result.xcom("generate", key="prediction_id") and record["status"] == outcome
    assert record["error"] == (None if outcome == "canceled" else f"emulated {outcome} error")


@pytest.mark.parametrize("dag_id", ["t_timeout", "t_worker_timeout"])
def test_timeout_cancels_the_prediction_and_says_so(run_dag, cometapi_conn, capfd, dag_id):
    result = run_dag(dag_id)
    assert result.state == FAILED
    log = capfd.readouterr().out
    assert "did not finish before the deadline" in log
    assert "and cancelled it" in log
    emulator = stats(cometapi_conn)
    assert emulator["cancels"] == 1
    (recorded,) = emulator["predictions"].values()
    assert recorded["status"] == "canceled"


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_sensor_modes_return_the_final_prediction(run_dag, cometapi_conn, mode):
    result = run_dag(f"t_sensor_{mode}")
    assert result.state == SUCCESS
    created_id = result.xcom("create", key="prediction_id")
    final = result.xcom("sense")
    assert final["id"] == created_id
    assert final["status"] == "succeeded"
    assert final["output"]
    assert stats(cometapi_conn)["creates"] == 1


@pytest.mark.parametrize("dag_id", ["t_sensor_failed", "t_sensor_failed_poke"])
def test_sensor_fails_at_once_on_a_failed_prediction(run_dag, cometapi_conn, capfd, dag_id):
    result = run_dag(dag_id)
    assert result.task_states[("sense", -1)] == FAILED
    assert "emulated sensor failure" in capfd.readouterr().out
    # The same record the operator leaves, for the Images tab, deferred or poked.
    record = result.xcom("sense", key="failed_prediction")
    assert record["id"] == result.xcom("create", key="prediction_id")
    assert (record["status"], record["error"]) == ("failed", "emulated sensor failure")
    assert record["model"] == "black-forest-labs/flux-schnell"
    assert set(record) <= {"id", "status", "error", "model", "created_at", "started_at", "completed_at"}


def test_sensor_soft_fail_skips_on_timeout(run_dag, cometapi_conn):
    result = run_dag("t_sensor_soft_fail")
    assert result.task_states[("sense", -1)] == SKIPPED


def test_prediction_link_from_the_connection_template(run_dag, cometapi_conn, monkeypatch):
    from tests.fixtures import set_connection

    template = "https://dashboard.example/predictions/{prediction_id}"
    set_connection(monkeypatch, {**cometapi_conn.connection_dict(), "extra": {"prediction_url_template": template}})
    result = run_dag("t_no_wait")
    prediction_id = result.xcom("generate", key="prediction_id")
    assert result.xcom("generate", key="_link_PredictionLink") == template.format(prediction_id=prediction_id)


def test_no_link_without_a_template(run_dag, cometapi_conn):
    result = run_dag("t_no_wait")
    assert result.xcom("generate", key="_link_PredictionLink") == ""


@pytest.mark.parametrize("where", ["worker", "deferred"])
def test_a_retry_resumes_the_prediction_of_the_broken_try(run_dag, cometapi_conn, monkeypatch, capfd, where):
    """Airflow 3.3's task state store, for real: one prediction paid for across two tries."""
    if not AIRFLOW_V_3_3_PLUS:
        pytest.skip("the task state store arrived in Airflow 3.3; older versions create a new prediction per try")
    set_connection(monkeypatch, {**cometapi_conn.connection_dict(), "extra": {"max_retries": 0}})
    # Every poll of the first try fails (MAX_FAILED_POLLS in a row ends its wait); then the gateway heals.
    cometapi_conn.add_fault(kind="server_error", route="get", status=503, count=MAX_FAILED_POLLS)
    result = run_dag(f"t_resume_{where}")
    assert result.state == SUCCESS
    prediction = result.xcom("generate")
    assert prediction["status"] == "succeeded"
    emulator = stats(cometapi_conn)
    assert emulator["creates"] == 1
    assert emulator["cancels"] == 0
    assert f"Resuming prediction {prediction['id']}" in capfd.readouterr().out
