"""DAGs run by tests/integration with dag.test() against the emulator (one per behaviour)."""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_provider_cometapi.operators.prediction import CreatePredictionOperator
from airflow_provider_cometapi.sensors.prediction import PredictionSensor

SCHNELL = "black-forest-labs/flux-schnell"
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
FAST = {"poll_interval": 0.2}
CREATED_ID = "{{ ti.xcom_pull(task_ids='create', key='prediction_id') }}"


def dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, start_date=START, catchup=False, tags=["cometapi-tests"])


with dag("t_deferrable"):
    CreatePredictionOperator(
        task_id="generate", model=SCHNELL, input={"prompt": "a red fox", "seed": 7}, deferrable=True, **FAST
    )

with dag("t_worker_polling"):
    CreatePredictionOperator(task_id="generate", model=SCHNELL, input={"prompt": "a red fox"}, deferrable=False, **FAST)

with dag("t_no_wait"):
    CreatePredictionOperator(
        task_id="generate", model=SCHNELL, input={"prompt": "a red fox"}, wait_for_completion=False
    )

with dag("t_prefer_wait"):
    CreatePredictionOperator(
        task_id="generate",
        model=SCHNELL,
        input={"prompt": "quick", "_emulator": {"duration": 0.2}},
        prefer_wait=10,
        deferrable=True,
        **FAST,
    )

with dag("t_mapped"):
    CreatePredictionOperator.partial(task_id="generate", model=SCHNELL, deferrable=True, **FAST).expand(
        input=[{"prompt": "a cat"}, {"prompt": "a dog"}, {"prompt": "a bird", "aspect_ratio": "16:9"}]
    )

with dag("t_templated"):
    CreatePredictionOperator(
        task_id="generate",
        model="{{ params.model }}",
        input={"prompt": "{{ params.subject }} on {{ ds }}"},
        params={"model": SCHNELL, "subject": "a lighthouse"},
        deferrable=True,
        **FAST,
    )

for outcome in ("failed", "canceled", "aborted"):
    with dag(f"t_{outcome}"):
        CreatePredictionOperator(
            task_id="generate",
            model=SCHNELL,
            input={"prompt": "x", "_emulator": {"outcome": outcome, "error": f"emulated {outcome} error"}},
            deferrable=True,
            **FAST,
        )

with dag("t_timeout"):
    CreatePredictionOperator(
        task_id="generate",
        model=SCHNELL,
        input={"prompt": "slow", "_emulator": {"duration": 60}},
        deferrable=True,
        timeout=1,
        **FAST,
    )

with dag("t_worker_timeout"):
    CreatePredictionOperator(
        task_id="generate",
        model=SCHNELL,
        input={"prompt": "slow", "_emulator": {"duration": 60}},
        deferrable=False,
        timeout=1,
        **FAST,
    )

for mode, deferrable in (("poke", False), ("reschedule", False), ("deferrable", True)):
    with dag(f"t_sensor_{mode}"):
        create = CreatePredictionOperator(
            task_id="create", model=SCHNELL, input={"prompt": "sensed"}, wait_for_completion=False
        )
        sense = PredictionSensor(
            task_id="sense",
            prediction_id=CREATED_ID,
            deferrable=deferrable,
            mode="reschedule" if mode == "reschedule" else "poke",
            poke_interval=0.2,
            timeout=30,
        )
        create >> sense

for deferrable in (True, False):
    with dag("t_sensor_failed" if deferrable else "t_sensor_failed_poke"):
        create = CreatePredictionOperator(
            task_id="create",
            model=SCHNELL,
            input={"prompt": "x", "_emulator": {"outcome": "failed", "error": "emulated sensor failure"}},
            wait_for_completion=False,
        )
        create >> PredictionSensor(task_id="sense", prediction_id=CREATED_ID, deferrable=deferrable, poke_interval=0.2)

with dag("t_sensor_soft_fail"):
    create = CreatePredictionOperator(
        task_id="create",
        model=SCHNELL,
        input={"prompt": "x", "_emulator": {"outcome": "never"}},
        wait_for_completion=False,
    )
    create >> PredictionSensor(
        task_id="sense", prediction_id=CREATED_ID, deferrable=True, poke_interval=0.2, timeout=1, soft_fail=True
    )

# A try whose wait breaks (the test makes the gateway fail every poll for a while); its retry
# must resume the same prediction through Airflow's task state store instead of paying again.
for deferrable in (False, True):
    with dag(f"t_resume_{'deferred' if deferrable else 'worker'}"):
        CreatePredictionOperator(
            task_id="generate",
            model=SCHNELL,
            input={"prompt": "resumed", "_emulator": {"duration": 3}},
            deferrable=deferrable,
            retries=1,
            retry_delay=datetime.timedelta(seconds=0),
            **FAST,
        )
