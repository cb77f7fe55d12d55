"""
Generate an image with FLUX schnell, then edit it with FLUX Kontext Pro, and store both.

Two ``@task.cometapi`` tasks: the edit's function receives the generation's finished
prediction and returns its first output URL as the ``input_image`` (output URLs live about an
hour, long enough for the next task). Each prediction goes to ``SavePredictionOutputsOperator``
as it is, no XCom template needed. Params ``prompt`` and ``edit``.
"""

from __future__ import annotations

import datetime
from typing import Any

from airflow.sdk import dag, task

from airflow_provider_cometapi.operators.storage import SavePredictionOutputsOperator

# Param storage_root, else the Variable cometapi_storage_root, else /tmp (see cometapi_daily_images).
STORAGE_ROOT = "{{ params.storage_root or var.value.get('cometapi_storage_root', 'file:///tmp/cometapi-images') }}"
# The run's date: its logical date, or for a manual run without one, the day it was triggered.
DAY = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"


@dag(
    description="Generate with flux-schnell, edit with flux-kontext-pro, store both.",
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    tags=["cometapi", "example"],
    params={
        "prompt": "a red bicycle leaning on a brick wall, photo",
        "edit": "make the bicycle blue and add falling autumn leaves",
        "storage_root": "",
    },
)
def cometapi_edit_chain() -> None:
    @task.cometapi(model="black-forest-labs/flux-schnell", deferrable=True, poll_interval=2)
    def generate(params: dict[str, Any] | None = None) -> dict[str, Any]:
        assert params is not None
        return {"prompt": params["prompt"], "aspect_ratio": "3:2"}

    @task.cometapi(model="black-forest-labs/flux-kontext-pro", deferrable=True, poll_interval=2)
    def edit(source: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        assert params is not None
        return {
            "prompt": params["edit"],
            "input_image": source["output"][0],
            "aspect_ratio": "match_input_image",
            "output_format": "png",
        }

    generated = generate()
    edited = edit(generated)
    for name, prediction in (("generate", generated), ("edit", edited)):
        SavePredictionOutputsOperator(
            task_id=f"store_{name}", prediction_id=prediction, destination=STORAGE_ROOT + "/edits/" + DAY
        )


cometapi_edit_chain()
