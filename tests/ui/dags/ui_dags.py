"""The DAG whose task log and link the UI tier looks at; it uses the connection made in the form."""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_provider_cometapi.operators.prediction import CreatePredictionOperator

with DAG(
    "cometapi_ui_prediction",
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    tags=["cometapi"],
):
    CreatePredictionOperator(
        task_id="generate",
        model="black-forest-labs/flux-schnell",
        input={"prompt": "a lighthouse at dawn, watercolor", "aspect_ratio": "16:9"},
        cometapi_conn_id="cometapi_ui",
        deferrable=True,
        poll_interval=1,
    )
