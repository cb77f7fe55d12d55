"""DAGs the end-to-end tier runs in a real deployment (scheduler, triggerer, LocalExecutor)."""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_provider_cometapi.operators.prediction import CreatePredictionOperator
from airflow_provider_cometapi.sensors.prediction import PredictionSensor

with DAG(
    "e2e_create_then_sense",
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
):
    create = CreatePredictionOperator(
        task_id="create",
        model="black-forest-labs/flux-schnell",
        input={"prompt": "a deferred lighthouse"},
        deferrable=True,
        poll_interval=1,
    )
    sense = PredictionSensor(
        task_id="sense",
        prediction_id="{{ ti.xcom_pull(task_ids='create', key='prediction_id') }}",
        deferrable=True,
        poke_interval=1,
        timeout=300,
    )
    create >> sense

with DAG(
    "e2e_slots",
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    doc_md="Ten 10-second predictions, deferred: two worker slots are enough to run them at once.",
):
    CreatePredictionOperator.partial(
        task_id="generate", model="black-forest-labs/flux-schnell", deferrable=True, poll_interval=2
    ).expand(input=[{"prompt": f"slot test {i}", "_emulator": {"duration": 10}} for i in range(10)])

with DAG(
    "e2e_long",
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    doc_md="One 20-second prediction, for triggerer restarts and user kills.",
):
    CreatePredictionOperator(
        task_id="generate",
        model="black-forest-labs/flux-schnell",
        input={"prompt": "a long one", "_emulator": {"duration": 20}},
        deferrable=True,
        poll_interval=1,
    )

with DAG(
    "e2e_celery_batch",
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    doc_md="Twenty mapped predictions for the distributed (Celery, two triggerers) test.",
):
    # 45 s each: long enough that half of them are deferred at once even when a loaded machine
    # starts the tasks slowly (the test kills a triggerer while they wait).
    CreatePredictionOperator.partial(
        task_id="generate", model="black-forest-labs/flux-schnell", deferrable=True, poll_interval=2
    ).expand(input=[{"prompt": f"distributed {i}", "_emulator": {"duration": 45}} for i in range(20)])

with DAG(
    "e2e_durable",
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    doc_md="Polls on the worker; the test kills the task process mid-wait and the retry resumes.",
):
    CreatePredictionOperator(
        task_id="generate",
        model="black-forest-labs/flux-schnell",
        input={"prompt": "a prediction that outlives its worker", "_emulator": {"duration": 15}},
        deferrable=False,
        poll_interval=1,
        retries=1,
        retry_delay=datetime.timedelta(seconds=1),
    )

with DAG(
    "e2e_outage",
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    doc_md="Four deferred predictions; the test takes the gateway away while they wait.",
):
    CreatePredictionOperator.partial(
        task_id="generate", model="black-forest-labs/flux-schnell", deferrable=True, poll_interval=1
    ).expand(input=[{"prompt": f"outage {i}", "_emulator": {"duration": 20}} for i in range(4)])

with DAG(
    "e2e_failures",
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    doc_md="Tasks that fail in the ways a DAG author meets, so their exception texts are in the logs.",
):
    CreatePredictionOperator(
        task_id="unknown_model", model="black-forest-labs/flux-imaginary", input={"prompt": "x"}, deferrable=True
    )
    CreatePredictionOperator(
        task_id="failed_prediction",
        model="black-forest-labs/flux-schnell",
        input={"prompt": "x", "_emulator": {"outcome": "failed", "duration": 2}},
        deferrable=True,
        poll_interval=1,
    )
    PredictionSensor(task_id="unknown_prediction", prediction_id="abcdefghijklmnopqrstuvwxyz", deferrable=True)
