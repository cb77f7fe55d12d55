"""
Generate an image with FLUX schnell, then edit it with FLUX Kontext Pro, and store both.

The edit's ``input_image`` is the first output URL of the generation, pulled from XCom: output
URLs live about an hour, long enough for the next task. Params ``prompt`` and ``edit``.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_provider_cometapi.operators.prediction import CreatePredictionOperator
from airflow_provider_cometapi.operators.storage import SavePredictionOutputsOperator

# Param storage_root, else the Variable cometapi_storage_root, else /tmp (see cometapi_daily_images).
STORAGE_ROOT = "{{ params.storage_root or var.value.get('cometapi_storage_root', 'file:///tmp/cometapi-images') }}"
# The run's date: its logical date, or for a manual run without one, the day it was triggered.
DAY = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"

with DAG(
    dag_id="cometapi_edit_chain",
    description="Generate with flux-schnell, edit with flux-kontext-pro, store both.",
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    tags=["cometapi", "example"],
    params={
        "prompt": "a red bicycle leaning on a brick wall, photo",
        "edit": "make the bicycle blue and add falling autumn leaves",
        "storage_root": "",
    },
):
    generate = CreatePredictionOperator(
        task_id="generate",
        model="black-forest-labs/flux-schnell",
        input={"prompt": "{{ params.prompt }}", "aspect_ratio": "3:2"},
        deferrable=True,
        poll_interval=2,
    )
    edit = CreatePredictionOperator(
        task_id="edit",
        model="black-forest-labs/flux-kontext-pro",
        input={
            "prompt": "{{ params.edit }}",
            "input_image": "{{ ti.xcom_pull(task_ids='generate')['output'][0] }}",
            "aspect_ratio": "match_input_image",
            "output_format": "png",
        },
        deferrable=True,
        poll_interval=2,
    )
    for source in (generate, edit):
        store = SavePredictionOutputsOperator(
            task_id=f"store_{source.task_id}",
            prediction_id=f"{{{{ ti.xcom_pull(task_ids='{source.task_id}', key='prediction_id') }}}}",
            destination=STORAGE_ROOT + "/edits/" + DAY,
        )
        source >> store
    generate >> edit
