"""The batch operator in a real deployment: the e2e test kills its worker and restarts the triggerer."""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_provider_cometapi.operators.batch import CreatePredictionBatchOperator

BATCH_SIZE = 30
MAX_IN_FLIGHT = 10
# The first wave (inputs 0-9, whichever try creates them) runs longer, so the wait after the
# retry's first wave lasts long enough to restart the triggerer under it; the rest are quick.
FIRST_WAVE_SECONDS = 15
INPUTS = [
    {"prompt": f"batch e2e {i}", "_emulator": {"duration": FIRST_WAVE_SECONDS if i < MAX_IN_FLIGHT else 4}}
    for i in range(BATCH_SIZE)
]

with DAG(
    "e2e_batch",
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    doc_md="Thirty inputs in one deferrable batch task, in waves of ten; retried after the test's kills.",
):
    CreatePredictionBatchOperator(
        task_id="generate",
        model="black-forest-labs/flux-schnell",
        inputs=INPUTS,
        destination="{{ var.value.cometapi_storage_root }}/batch",
        max_in_flight=MAX_IN_FLIGHT,
        creates_per_minute=120,
        deferrable=True,
        poll_interval=1,
        retries=2,
        retry_delay=datetime.timedelta(seconds=1),
    )
