"""DAGs for benchmarks/deployment_slots.py: ten 10-second predictions on two worker slots, waited
for three ways, and one 1-second prediction with ``Prefer: wait`` against deferral."""

from __future__ import annotations

import datetime
from datetime import timedelta

from airflow.sdk import DAG

from airflow_provider_cometapi.operators.prediction import CreatePredictionOperator
from airflow_provider_cometapi.sensors.prediction import PredictionSensor

MODEL = "black-forest-labs/flux-schnell"
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
PREDICTIONS = 10
SECONDS = 10
POLL = 2


def inputs(name: str, seconds: float = SECONDS, count: int = PREDICTIONS) -> list[dict[str, object]]:
    return [{"prompt": f"{name} {i}", "_emulator": {"duration": seconds}} for i in range(count)]


with DAG("bench_deferrable", schedule=None, start_date=START, catchup=False):
    CreatePredictionOperator.partial(task_id="generate", model=MODEL, deferrable=True, poll_interval=POLL).expand(
        input=inputs("deferrable")
    )

with DAG("bench_blocking", schedule=None, start_date=START, catchup=False):
    CreatePredictionOperator.partial(task_id="generate", model=MODEL, deferrable=False, poll_interval=POLL).expand(
        input=inputs("blocking")
    )

# A rescheduled sensor can be marked up_for_retry when the executor's "success" for its last poke
# arrives after it was queued again (apache/airflow#10790, still seen on 3.3): a few quick retries
# ride that out; the page reports the tries.
with DAG("bench_reschedule", schedule=None, start_date=START, catchup=False):
    created = CreatePredictionOperator.partial(task_id="create", model=MODEL, wait_for_completion=False).expand(
        input=inputs("reschedule")
    )
    PredictionSensor.partial(
        task_id="sense", mode="reschedule", poke_interval=POLL, timeout=600, retries=3, retry_delay=timedelta(seconds=2)
    ).expand(prediction_id=created.output.map(lambda prediction: prediction["id"]))

with DAG("bench_prefer_wait", schedule=None, start_date=START, catchup=False):
    CreatePredictionOperator(
        task_id="generate", model=MODEL, input=inputs("prefer-wait", 1, 1)[0], deferrable=False, prefer_wait=30
    )

with DAG("bench_deferred_short", schedule=None, start_date=START, catchup=False):
    CreatePredictionOperator(
        task_id="generate", model=MODEL, input=inputs("deferred", 1, 1)[0], deferrable=True, poll_interval=1
    )
