"""
Start a prediction without waiting, wait for it with a deferrable sensor, then store it.

Useful when something else starts predictions (another system, an earlier DAG) and this DAG
only has the id: ``PredictionSensor`` waits in the triggerer and returns the final prediction.
Written with the operator classes; the tasks pass each other their outputs (``.output``)
instead of XCom templates.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_provider_cometapi.operators.prediction import CreatePredictionOperator
from airflow_provider_cometapi.operators.storage import SavePredictionOutputsOperator
from airflow_provider_cometapi.sensors.prediction import PredictionSensor

# Param storage_root, else the Variable cometapi_storage_root, else /tmp (see cometapi_daily_images).
STORAGE_ROOT = "{{ params.storage_root or var.value.get('cometapi_storage_root', 'file:///tmp/cometapi-images') }}"
# The run's date: its logical date, or for a manual run without one, the day it was triggered.
DAY = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"

with DAG(
    dag_id="cometapi_sensor_pattern",
    description="Create without waiting, wait with a deferrable sensor, store.",
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    tags=["cometapi", "example"],
    params={"prompt": "an isometric pixel-art city block at night", "storage_root": ""},
):
    start = CreatePredictionOperator(
        task_id="start",
        model="black-forest-labs/flux-dev",
        input={"prompt": "{{ params.prompt }}", "num_outputs": 2},
        wait_for_completion=False,
    )
    wait = PredictionSensor(
        task_id="wait",
        prediction_id=start.output["prediction_id"],  # the id, pushed as soon as the prediction exists
        deferrable=True,
        poke_interval=2,
        timeout=15 * 60,
    )
    store = SavePredictionOutputsOperator(
        task_id="store",
        prediction_id=wait.output,  # the final prediction the sensor returned
        destination=STORAGE_ROOT + "/sensor/" + DAY,
    )
