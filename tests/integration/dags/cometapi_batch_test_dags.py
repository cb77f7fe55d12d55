"""Batch DAGs the integration tests run with dag.test() against the emulator."""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, Asset

from airflow_provider_cometapi.operators.batch import CreatePredictionBatchOperator

BATCH_ASSET = Asset(name="t_batch_results", uri="cometapi://t-batch")
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
# Every 25th input fails and every 40th is aborted, each after its own short run.
FAILING = {index for index in range(200) if index % 25 == 7}
ABORTED = {index for index in range(200) if index % 40 == 13} - FAILING


def _input(index: int) -> dict:
    outcome = "failed" if index in FAILING else "aborted" if index in ABORTED else "succeeded"
    return {"prompt": f"test image {index}", "seed": index, "_emulator": {"duration": 0.3, "outcome": outcome}}


with DAG(dag_id="t_batch_200", schedule=None, start_date=START, catchup=False):
    CreatePredictionBatchOperator(
        task_id="batch",
        model="black-forest-labs/flux-schnell",
        inputs=[_input(index) for index in range(200)],
        destination="{{ var.value.cometapi_batch_root }}/{{ ds }}",
        deferrable=True,
        max_in_flight=60,
        creates_per_minute=12000,
        poll_interval=0.2,
        timeout=120,
        max_failed=0.1,
        outlets=[BATCH_ASSET],
    )
