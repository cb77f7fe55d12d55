"""
Generate a set of images every day and store them under a dated folder.

Each prompt becomes one mapped ``@task.cometapi`` task: while the images are generated, the
waits run in the triggerer and hold no worker slot. Each finished prediction is then stored by
``SavePredictionOutputsOperator`` (images plus a JSON sidecar), which also emits an event on
the ``cometapi_daily_images`` asset; ``cometapi_daily_index`` runs on it.

Configure it without editing the file:

* params ``prompts``, ``model``, ``aspect_ratio`` (when triggering a run, or their defaults);
* the storage root: param ``storage_root``, else the Variable ``cometapi_storage_root``, else
  ``file:///tmp/cometapi-images``. Any Airflow object storage URI works, for example
  ``s3://aws_default@my-bucket/images`` (install ``apache-airflow-providers-amazon[s3fs]``)
  or ``gs://google_cloud_default@my-bucket/images``.
* the connection ``cometapi_default`` (type CometAPI): your API key, or the local emulator.
"""

from __future__ import annotations

import datetime
import zlib
from typing import Any

from airflow.sdk import Asset, Param, dag, task

from airflow_provider_cometapi.operators.storage import SavePredictionOutputsOperator

DAILY_IMAGES = Asset(name="cometapi_daily_images", uri="cometapi://daily-images")

STORAGE_ROOT = "{{ params.storage_root or var.value.get('cometapi_storage_root', 'file:///tmp/cometapi-images') }}"
# The run's date: its logical date, or for a manual run without one, the day it was triggered.
DAY = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"


@dag(
    description="Generate the day's images with CometAPI and store them under a dated folder.",
    schedule="@daily",
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["cometapi", "example"],
    params={
        "prompts": Param(
            [
                "a lighthouse on a cliff at dawn, watercolor",
                "a bowl of ramen, studio food photography",
                "a fox in a snowy forest, children's book illustration",
            ],
            type="array",
            description="One image per prompt.",
        ),
        "model": Param("black-forest-labs/flux-schnell", type="string"),
        "aspect_ratio": Param("1:1", type="string"),
        "storage_root": Param("", type="string", description="Where to store; empty: Variable or /tmp."),
    },
)
def cometapi_daily_images() -> None:
    @task
    def todays_prompts(params: dict[str, Any] | None = None) -> list[str]:
        assert params is not None
        return list(params["prompts"])

    @task.cometapi(
        model="{{ params.model }}",
        deferrable=True,
        poll_interval=2,
        timeout=datetime.timedelta(minutes=15),
        retries=1,
    )
    def generate(prompt: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One image per prompt; a seed from the prompt makes a re-run paint the same picture."""
        assert params is not None
        seed = zlib.crc32(prompt.encode())
        return {"prompt": prompt, "aspect_ratio": params["aspect_ratio"], "output_format": "webp", "seed": seed}

    predictions = generate.expand(prompt=todays_prompts())

    SavePredictionOutputsOperator.partial(
        task_id="store",
        destination=STORAGE_ROOT + "/" + DAY,
        outlets=[DAILY_IMAGES],
    ).expand(prediction_id=predictions)


cometapi_daily_images()
