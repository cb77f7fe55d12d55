"""Cost and budgets in real Airflow runs (dag.test()) against the emulator, with prices set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_cometapi.polling import MAX_FAILED_POLLS
from airflow_provider_cometapi.version_compat import AIRFLOW_V_3_3_PLUS
from tests.fixtures import set_connection
from tests.integration.test_examples import asset_events

pytestmark = pytest.mark.integration

SCHNELL = "black-forest-labs/flux-schnell"


@pytest.fixture
def priced(cometapi_conn, monkeypatch, tmp_path):
    extra = {"prices": json.dumps({SCHNELL: 0.003}), "currency": "EUR", "max_retries": 0}
    set_connection(monkeypatch, {**cometapi_conn.connection_dict(), "extra": extra})
    monkeypatch.setenv("AIRFLOW_VAR_COMETAPI_TEST_DESTINATION", tmp_path.as_uri())
    return cometapi_conn


def test_cost_is_in_every_result_sidecar_event_and_log(run_dag, priced, tmp_path: Path, capfd):
    result = run_dag("t_cost")
    assert result.state == "success", result.task_states
    generated = result.xcom("generate")
    assert (generated["cost"], generated["currency"]) == (0.006, "EUR")
    decorated = result.xcom("decorated")
    assert (decorated["cost"], decorated["currency"]) == (0.003, "EUR")

    sidecar = json.loads((tmp_path / f"{generated['id']}.json").read_text())
    assert (sidecar["images"], sidecar["cost"], sidecar["currency"]) == (2, 0.006, "EUR")

    run_id = result.dag_run.run_id
    (images_event,) = asset_events("t_cost_images", run_id)
    assert images_event == {
        "prediction_id": generated["id"],
        "model": SCHNELL,
        "images": 2,
        "cost": 0.006,
        "currency": "EUR",
    }
    (stored_event,) = asset_events("t_cost_stored", run_id)
    assert (stored_event["cost"], stored_event["currency"]) == (0.006, "EUR")

    log = capfd.readouterr().out
    assert f"Prediction {generated['id']} succeeded: 2 images, " in log
    assert " s predict time, 0.006 EUR." in log
    assert priced.stats()["creates"] == 2


def test_a_task_over_its_budget_creates_nothing_and_is_not_retried(run_dag, priced, capfd):
    result = run_dag("t_cost_over_budget")
    assert result.task_states[("generate", -1)] == "failed"
    assert priced.stats()["creates"] == 0
    out = capfd.readouterr().out
    assert "max_images=3 allows 3 more" in out
    assert "BudgetExceededError" in out
    (ti,) = result.dag_run.get_task_instances()
    assert ti.try_number == 1  # an AirflowFailException: retries=2 left unused


def test_a_retry_resumes_within_the_budget(run_dag, priced):
    if not AIRFLOW_V_3_3_PLUS:
        pytest.skip("the task state store arrived in Airflow 3.3")
    priced.add_fault(kind="server_error", route="get", status=503, count=MAX_FAILED_POLLS)
    result = run_dag("t_cost_resume")
    assert result.state == "success", result.task_states
    assert result.xcom("generate")["cost"] == 0.003
    assert priced.stats()["creates"] == 1


def test_a_batch_reports_its_cost_per_line_in_total_and_in_its_event(run_dag, priced, tmp_path: Path, capfd):
    result = run_dag("t_cost_batch")
    assert result.state == "success", result.task_states
    batch = result.xcom("batch")
    assert (batch["images"], batch["cost"], batch["currency"], batch["skipped"]) == (9, 0.027, "EUR", 0)
    manifest = [json.loads(line) for line in Path(batch["manifest"].removeprefix("file://")).read_text().splitlines()]
    assert [(line["images"], line["cost"]) for line in manifest] == [(1, 0.003), (2, 0.006)] * 3
    (event,) = asset_events("t_cost_batch", result.dag_run.run_id)
    assert (event["cost"], event["currency"], event["images"]) == (0.027, "EUR", 9)
    assert "9 images, 0.027 EUR; manifest" in capfd.readouterr().out
    assert priced.stats()["creates"] == 6


def test_a_batch_over_its_budget_finishes_what_fits_then_fails(run_dag, priced, tmp_path: Path, capfd):
    result = run_dag("t_cost_batch_over_budget")
    assert result.task_states[("batch", -1)] == "failed"
    assert priced.stats()["creates"] == 5
    (manifest_file,) = tmp_path.glob("*.manifest.jsonl")
    statuses = [json.loads(line)["status"] for line in manifest_file.read_text().splitlines()]
    assert statuses == ["succeeded"] * 5 + ["skipped"] * 3
    out = capfd.readouterr().out
    assert "BudgetExceededError" in out and "3 of 8 inputs were not created" in out
