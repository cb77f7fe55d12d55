"""OpenLineage in a real deployment: a create, a store and two batches (one past the file bound)."""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_provider_cometapi.lineage import MAX_FILE_DATASETS
from airflow_provider_cometapi.operators.batch import CreatePredictionBatchOperator
from airflow_provider_cometapi.operators.prediction import CreatePredictionOperator
from airflow_provider_cometapi.operators.storage import SavePredictionOutputsOperator

MODEL = "black-forest-labs/flux-schnell"
SMALL_BATCH = 3
# One image and one sidecar per input: more files than one event names one by one.
LARGE_BATCH = MAX_FILE_DATASETS // 2 + 1
# Every prediction outlasts its task's deferral: a trigger that fires within seconds of it can get
# the resumed task failed by the scheduler (apache/airflow#72716).
SLOW = {"_emulator": {"duration": 12}}

with DAG(
    "e2e_lineage",
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    # A task process that a loaded machine keeps from reaching the API server fails before it runs:
    # a retry resumes (the prediction, the manifest) without creating anything again.
    default_args={"retries": 2, "retry_delay": datetime.timedelta(seconds=2)},
    doc_md="Each CometAPI operator once, for the OpenLineage events their tasks emit.",
):
    generate = CreatePredictionOperator(
        task_id="generate",
        model=MODEL,
        input={"prompt": "a lighthouse, for lineage", "num_outputs": 2, **SLOW},
        deferrable=True,
        poll_interval=1,
    )
    SavePredictionOutputsOperator(
        task_id="store",
        prediction_id=generate.output,
        destination="{{ var.value.cometapi_storage_root }}/lineage/single",
    )
    CreatePredictionBatchOperator(
        task_id="batch",
        model=MODEL,
        inputs=[{"prompt": f"lineage batch {i}", **SLOW} for i in range(SMALL_BATCH)],
        destination="{{ var.value.cometapi_storage_root }}/lineage/batch",
        deferrable=True,
        poll_interval=1,
    )
    CreatePredictionBatchOperator(
        task_id="large_batch",
        model=MODEL,
        inputs=[{"prompt": f"lineage large batch {i}", **SLOW} for i in range(LARGE_BATCH)],
        destination="{{ var.value.cometapi_storage_root }}/lineage/large",
        max_in_flight=LARGE_BATCH,
        creates_per_minute=6000,
        deferrable=True,
        poll_interval=1,
    )
