"""@task.cometapi in real Airflow runs (dag.test()) against the emulator, and the storage operator's wiring."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_cometapi.polling import MAX_FAILED_POLLS
from airflow_provider_cometapi.version_compat import AIRFLOW_V_3_3_PLUS
from tests.fixtures import set_connection

pytestmark = pytest.mark.integration

SUCCESS, FAILED, UPSTREAM_FAILED = "success", "failed", "upstream_failed"


@pytest.fixture
def destination(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("AIRFLOW_VAR_COMETAPI_TEST_DESTINATION", tmp_path.as_uri())
    return tmp_path


def test_deferred_returns_the_prediction_with_the_operators_xcoms(run_dag, cometapi_conn, capfd):
    result = run_dag("tf_deferred")
    assert result.state == SUCCESS
    prediction = result.xcom("generate")
    assert prediction["status"] == "succeeded"
    assert prediction["input"] == {"prompt": "a red fox, watercolor", "seed": 7}  # from an XComArg argument
    assert result.xcom("generate", key="prediction_id") == prediction["id"]
    assert result.xcom("generate", key="id") is None  # one return value, never unrolled from `-> dict`
    assert all(isinstance(url, str) for url in prediction["output"])
    emulator = cometapi_conn.stats()
    assert emulator["creates"] == 1
    log = capfd.readouterr().out
    assert "DEFERRED" in log
    assert 'generate() returned the input {"prompt": "a red fox, watercolor", "seed": 7}' in log


def test_a_returned_string_is_the_prompt_and_the_worker_can_wait(run_dag, cometapi_conn, capfd):
    result = run_dag("tf_worker_string")
    assert result.state == SUCCESS
    assert result.xcom("generate")["input"] == {"prompt": "a red fox in the snow"}
    assert "DEFERRED" not in capfd.readouterr().out


def test_not_waiting_returns_the_prediction_as_created(run_dag, cometapi_conn):
    result = run_dag("tf_no_wait")
    assert result.state == SUCCESS
    assert result.xcom("generate")["status"] == "starting"
    assert cometapi_conn.stats()["polls"] == 0


def test_prefer_wait_finishes_inside_the_create_call(run_dag, cometapi_conn, capfd):
    result = run_dag("tf_prefer_wait")
    assert result.state == SUCCESS
    assert result.xcom("generate")["status"] == "succeeded"
    emulator = cometapi_conn.stats()
    assert (emulator["creates"], emulator["polls"]) == (1, 0)
    assert "DEFERRED" not in capfd.readouterr().out


def test_mapped_over_the_functions_arguments(run_dag, cometapi_conn):
    result = run_dag("tf_mapped")
    assert result.state == SUCCESS
    predictions = [result.xcom("generate", map_index=i) for i in range(3)]
    assert [p["input"]["prompt"] for p in predictions] == ["a cat, ink", "a dog, ink", "a bird, ink"]
    assert [result.xcom("generate", key="prediction_id", map_index=i) for i in range(3)] == [
        p["id"] for p in predictions
    ]
    assert cometapi_conn.stats()["creates"] == 3


def test_expand_kwargs_over_an_upstream_list(run_dag, cometapi_conn):
    result = run_dag("tf_expand_kwargs")
    assert result.state == SUCCESS
    predictions = [result.xcom("generate", map_index=i) for i in range(2)]
    assert [p["input"] for p in predictions] == [{"prompt": "a cat, ink"}, {"prompt": "a dog, charcoal"}]
    assert all(p["status"] == "succeeded" for p in predictions)
    assert result.xcom("generate", map_index=2) is None
    assert cometapi_conn.stats()["creates"] == 2


def test_chained_into_storage_without_templates(run_dag, cometapi_conn, destination):
    result = run_dag("tf_chained")
    assert result.state == SUCCESS
    prediction_id = result.xcom("generate")["id"]
    images = [f"file://{destination}/{prediction_id}_{i}.webp" for i in range(2)]
    assert result.xcom("store") == images  # the files alone: downstream tasks map over them
    assert result.xcom("store", key="sidecar") == f"file://{destination}/{prediction_id}.json"
    assert result.xcom("store", key="prediction_id") == prediction_id
    assert [result.xcom("describe", map_index=i) for i in range(2)] == [f"{prediction_id}_{i}.webp" for i in range(2)]
    assert result.xcom("sidecar_name") == f"{prediction_id}.json"
    assert sorted(p.name for p in destination.iterdir()) == sorted(
        [f"{prediction_id}.json", f"{prediction_id}_0.webp", f"{prediction_id}_1.webp"]
    )


def test_mapped_predictions_stored_one_each(run_dag, cometapi_conn, destination):
    result = run_dag("tf_mapped_chained")
    assert result.state == SUCCESS
    ids = {result.xcom("generate", map_index=i)["id"] for i in range(2)}
    assert {result.xcom("store", key="prediction_id", map_index=i) for i in range(2)} == ids
    assert {p.name for p in destination.iterdir()} == {f"{i}_0.webp" for i in ids} | {f"{i}.json" for i in ids}


def test_storage_accepts_every_form_of_prediction_id(run_dag, cometapi_conn, destination):
    result = run_dag("tf_storage_forms")
    assert result.state == SUCCESS
    prediction_id = result.xcom("generate", key="prediction_id")
    for form in ("prediction", "id_xcom", "template"):
        assert result.xcom(f"store_{form}", key="prediction_id") == prediction_id
        assert (destination / form / f"{prediction_id}_0.webp").stat().st_size > 0
    assert cometapi_conn.stats()["creates"] == 1


@pytest.mark.parametrize("outcome", ["failed", "canceled", "aborted"])
def test_an_unsuccessful_prediction_fails_the_task(run_dag, cometapi_conn, capfd, outcome):
    result = run_dag(f"tf_{outcome}")
    assert result.task_states[("generate", -1)] == FAILED
    log = capfd.readouterr().out
    assert "PredictionFailedError" in log
    if outcome != "canceled":
        assert f"emulated {outcome} error" in log
    assert cometapi_conn.stats()["creates"] == 1


@pytest.mark.parametrize("where", ["deferred", "worker"])
def test_timeout_cancels_the_prediction(run_dag, cometapi_conn, capfd, where):
    result = run_dag(f"tf_timeout_{where}")
    assert result.task_states[("generate", -1)] == FAILED
    log = capfd.readouterr().out
    assert "did not finish before the deadline" in log
    assert "and cancelled it" in log
    emulator = cometapi_conn.stats()
    assert emulator["cancels"] == 1
    (recorded,) = emulator["predictions"].values()
    assert recorded["status"] == "canceled"


def test_a_bad_return_value_fails_before_any_request(run_dag, cometapi_conn, capfd):
    result = run_dag("tf_bad_return")
    assert result.task_states[("generate", -1)] == FAILED
    log = capfd.readouterr().out
    assert "InvalidInputError" in log
    assert "generate() returned list" in log
    emulator = cometapi_conn.stats()
    assert emulator["creates"] == 0


def test_the_link_is_the_operators(run_dag, cometapi_conn, monkeypatch):
    template = "https://dashboard.example/predictions/{prediction_id}"
    set_connection(monkeypatch, {**cometapi_conn.connection_dict(), "extra": {"prediction_url_template": template}})
    result = run_dag("tf_no_wait")
    prediction_id = result.xcom("generate", key="prediction_id")
    assert result.xcom("generate", key="_link_PredictionLink") == template.format(prediction_id=prediction_id)


@pytest.mark.parametrize("where", ["deferred", "worker"])
def test_a_retry_resumes_the_prediction(run_dag, cometapi_conn, monkeypatch, capfd, where):
    if not AIRFLOW_V_3_3_PLUS:
        pytest.skip("the task state store arrived in Airflow 3.3; older versions create a new prediction per try")
    set_connection(monkeypatch, {**cometapi_conn.connection_dict(), "extra": {"max_retries": 0}})
    cometapi_conn.add_fault(kind="server_error", route="get", status=503, count=MAX_FAILED_POLLS)
    result = run_dag(f"tf_resume_{where}")
    assert result.state == SUCCESS
    prediction = result.xcom("generate")
    assert prediction["status"] == "succeeded"
    (ti,) = result.dag_run.get_task_instances()
    assert ti.try_number == 2
    emulator = cometapi_conn.stats()
    assert emulator["creates"] == 1
    assert emulator["cancels"] == 0
    assert f"Resuming prediction {prediction['id']}" in capfd.readouterr().out


def test_over_its_budget_creates_nothing_and_is_not_retried(run_dag, cometapi_conn, capfd):
    result = run_dag("tf_over_budget")
    assert result.task_states[("generate", -1)] == FAILED
    assert cometapi_conn.stats()["creates"] == 0
    log = capfd.readouterr().out
    assert "BudgetExceededError" in log
    assert "max_images=3 allows 3 more" in log
    (ti,) = result.dag_run.get_task_instances()
    assert ti.try_number == 1  # an AirflowFailException: retries=2 left unused
