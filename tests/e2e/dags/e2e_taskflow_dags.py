"""@task.cometapi in a real deployment: deferred to the triggerer, mapped, chained into storage."""

from __future__ import annotations

import datetime
from typing import Any

from airflow.sdk import dag, task

from airflow_provider_cometapi.operators.storage import SavePredictionOutputsOperator


@dag(schedule=None, start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC), catchup=False)
def e2e_taskflow() -> None:
    @task
    def subjects() -> list[str]:
        return ["a lighthouse", "a harbour"]

    @task.cometapi(model="black-forest-labs/flux-schnell", deferrable=True, poll_interval=1)
    def generate(subject: str) -> dict[str, Any]:
        return {"prompt": f"{subject}, deferred by TaskFlow", "_emulator": {"duration": 8}}

    SavePredictionOutputsOperator.partial(
        task_id="store",
        destination="{{ var.value.cometapi_storage_root }}/taskflow",
    ).expand(prediction_id=generate.expand(subject=subjects()))


e2e_taskflow()
