"""
The DAGs whose Images tabs the gallery tests look at. Outputs go to ``COMETAPI_UI_IMAGES``
(a folder the test creates); the connection is ``cometapi_default`` from the environment.
"""

from __future__ import annotations

import datetime
import os

from airflow.sdk import DAG

from airflow_provider_cometapi.operators.prediction import CreatePredictionOperator
from airflow_provider_cometapi.operators.storage import SavePredictionOutputsOperator

IMAGES = os.environ.get("COMETAPI_UI_IMAGES", "/tmp/cometapi-ui-images")
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
MODEL = "black-forest-labs/flux-schnell"

with DAG("cometapi_ui_gallery", schedule=None, start_date=START, catchup=False, tags=["cometapi"]):
    # Two outputs stored; one prediction left at the gateway (expiring); one that fails.
    generate = CreatePredictionOperator(
        task_id="generate",
        model=MODEL,
        input={"prompt": "a red fox in fresh snow", "seed": 42, "aspect_ratio": "16:9", "num_outputs": 2},
        poll_interval=1,
    )
    store = SavePredictionOutputsOperator(
        task_id="store",
        prediction_id="{{ ti.xcom_pull(task_ids='generate', key='prediction_id') }}",
        destination=f"{IMAGES}/{{{{ run_id | replace(':', '-') | replace('+', '-') }}}}",
    )
    generate >> store
    CreatePredictionOperator(
        task_id="sketch",
        model=MODEL,
        input={"prompt": "a pencil sketch of an owl", "seed": 7, "aspect_ratio": "1:1"},
        poll_interval=1,
    )
    CreatePredictionOperator(
        task_id="doomed",
        model=MODEL,
        input={"prompt": "a forbidden picture", "_emulator": {"outcome": "failed", "error": "NSFW content detected"}},
        poll_interval=1,
        retries=0,
    )

with DAG("cometapi_ui_mapped", schedule=None, start_date=START, catchup=False, tags=["cometapi"]):
    CreatePredictionOperator.partial(task_id="generate", model=MODEL, poll_interval=1).expand(
        input=[
            {"prompt": "a lighthouse at dawn", "seed": 1},
            {"prompt": "a lighthouse at noon", "seed": 2},
            {"prompt": "a lighthouse at dusk", "seed": 3},
        ]
    )

with DAG("cometapi_ui_other", schedule=None, start_date=START, catchup=False, tags=["cometapi"]):
    CreatePredictionOperator(
        task_id="generate", model=MODEL, input={"prompt": "another team's cat", "seed": 5}, poll_interval=1
    )
