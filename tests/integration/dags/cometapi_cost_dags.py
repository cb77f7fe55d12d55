"""DAGs of tests/integration/test_cost_dags.py: cost in every place it is reported, and budgets."""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, Asset, task

from airflow_provider_cometapi.operators.batch import CreatePredictionBatchOperator
from airflow_provider_cometapi.operators.prediction import CreatePredictionOperator
from airflow_provider_cometapi.operators.storage import SavePredictionOutputsOperator

SCHNELL = "black-forest-labs/flux-schnell"
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
FAST = {"poll_interval": 0.2}
DESTINATION = "{{ var.value.cometapi_test_destination }}"
IMAGES = Asset(name="t_cost_images", uri="cometapi://t-cost/images")
STORED = Asset(name="t_cost_stored", uri="cometapi://t-cost/stored")
BATCH = Asset(name="t_cost_batch", uri="cometapi://t-cost/batch")


def dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, start_date=START, catchup=False, tags=["cometapi-tests"])


with dag("t_cost"):
    generate = CreatePredictionOperator(
        task_id="generate",
        model=SCHNELL,
        input={"prompt": "a priced fox", "num_outputs": 2},
        deferrable=True,
        max_images=2,
        max_cost=0.01,
        outlets=[IMAGES],
        **FAST,
    )
    SavePredictionOutputsOperator(
        task_id="store", prediction_id=generate.output, destination=DESTINATION, outlets=[STORED]
    )

    @task.cometapi(model=SCHNELL, max_images=1, **FAST)
    def decorated() -> str:
        return "a priced owl"

    decorated()

# Over its budget: refused before creating, and not retried (a retry would be refused the same way).
with dag("t_cost_over_budget"):
    CreatePredictionOperator(
        task_id="generate",
        model=SCHNELL,
        input={"prompt": "too many", "num_outputs": 4},
        max_images=3,
        retries=2,
        retry_delay=datetime.timedelta(seconds=0),
        **FAST,
    )

# A try whose wait breaks; the retry resumes its prediction within a budget of one image.
with dag("t_cost_resume"):
    CreatePredictionOperator(
        task_id="generate",
        model=SCHNELL,
        input={"prompt": "resumed", "_emulator": {"duration": 3}},
        max_images=1,
        max_cost=0.003,
        retries=1,
        retry_delay=datetime.timedelta(seconds=0),
        **FAST,
    )

# A batch with prices: each manifest line's cost, the total in the return value and the event.
with dag("t_cost_batch"):
    CreatePredictionBatchOperator(
        task_id="batch",
        model=SCHNELL,
        inputs=[{"prompt": f"priced {i}", "num_outputs": 1 + i % 2} for i in range(6)],
        destination=DESTINATION,
        deferrable=True,
        max_in_flight=3,
        max_cost=1,
        outlets=[BATCH],
        **FAST,
    )

# A batch over its budget: creates what fits, records the rest skipped, fails saying so.
with dag("t_cost_batch_over_budget"):
    CreatePredictionBatchOperator(
        task_id="batch",
        model=SCHNELL,
        inputs=[f"budgeted {i}" for i in range(8)],
        destination=DESTINATION,
        deferrable=True,
        max_in_flight=2,
        max_images=5,
        **FAST,
    )
