"""DAGs for benchmarks/batch_vs_mapped.py: N prompts generated and stored two ways.

- ``bench_mapped``: the mapped design of the ``cometapi_daily_images`` example, a deferrable
  ``@task.cometapi`` mapped over the prompts, then ``SavePredictionOutputsOperator`` mapped over
  its predictions (two task instances per prompt);
- ``bench_batch``: one ``CreatePredictionBatchOperator`` with a destination.

Both take the same prompts from one ``prompts`` task (``n`` from the run's conf) and store into
the run's ``destination`` (conf). The map over ``prompts`` is an XCom list, so it is bounded by
``[core] max_map_length`` (1,024 by default); the benchmark sets it to at least N.
"""

from __future__ import annotations

import datetime
from typing import Any

from airflow.sdk import Param, dag, task

from airflow_provider_cometapi.operators.batch import CreatePredictionBatchOperator
from airflow_provider_cometapi.operators.storage import SavePredictionOutputsOperator

MODEL = "black-forest-labs/flux-schnell"
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
POLL = 1
# The batch's pace: 100 creates a second, the create limit batch_scale.py runs against; the
# mapped design is not paced at all (its creates come as fast as worker slots start tasks).
CREATES_PER_MINUTE = 6000
MAX_IN_FLIGHT = 1000
DESTINATION = "{{ params.destination }}"
# Both designs retry as a deployment's tasks would: a deferred task resumed within a few seconds
# can be failed by the scheduler (apache/airflow#72716), and a retried create re-attaches to its
# prediction rather than paying for a second (on Airflow 3.3, the task state store).
RETRIES = {"retries": 2, "retry_delay": datetime.timedelta(seconds=2)}
PARAMS = {
    "n": Param(10, type="integer", minimum=1, description="How many prompts."),
    "destination": Param("file:///tmp/bench-batch-vs-mapped", type="string", description="Where to store."),
}


@task(**RETRIES)
def prompts(params: dict[str, Any] | None = None) -> list[str]:
    assert params is not None
    return [f"a lighthouse at dawn, study {i}" for i in range(int(params["n"]))]


@dag("bench_mapped", schedule=None, start_date=START, catchup=False, params=PARAMS)
def bench_mapped() -> None:
    @task.cometapi(model=MODEL, deferrable=True, poll_interval=POLL, **RETRIES)
    def generate(prompt: str) -> dict[str, Any]:
        return {"prompt": prompt, "output_format": "webp"}

    predictions = generate.expand(prompt=prompts())
    SavePredictionOutputsOperator.partial(task_id="store", destination=DESTINATION, **RETRIES).expand(
        prediction_id=predictions
    )


@dag("bench_batch", schedule=None, start_date=START, catchup=False, params=PARAMS)
def bench_batch() -> None:
    CreatePredictionBatchOperator(
        task_id="generate",
        model=MODEL,
        inputs=prompts(),
        destination=DESTINATION,
        max_in_flight=MAX_IN_FLIGHT,
        creates_per_minute=CREATES_PER_MINUTE,
        deferrable=True,
        poll_interval=POLL,
        **RETRIES,
    )


bench_mapped()
bench_batch()
