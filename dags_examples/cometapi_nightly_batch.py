"""
Every night, one task generates the images of a whole prompt file and stores them in a dated folder.

One ``CreatePredictionBatchOperator`` carries every prompt: thousands of them are still one task
instance, one trigger and one XCom of counts, where a mapped ``CreatePredictionOperator`` would
be two task instances per prompt (and stop at ``[core] max_map_length``). The prompts come from
a JSON Lines file, one input per line (a string means ``{"prompt": s}``): by default the small
``prompts/nightly.jsonl`` beside this file, else the param ``prompts_uri`` (any object storage
URI, for example ``s3://aws_default@my-bucket/prompts/tonight.jsonl``).

The outputs land under ``<storage root>/nightly/<ds>/`` with their sidecars and the batch's
manifest (one line per prompt: its prediction, status and stored files), which a retry or a
cleared task reads back instead of paying again. The task then emits one event on the
``cometapi_nightly_batch`` asset with the manifest's URI and the counts in ``extra``, for DAGs
downstream to schedule on.

Configure it without editing the file: params ``prompts_uri``, ``model`` and ``storage_root``
(else the Variable ``cometapi_storage_root``, else ``file:///tmp/cometapi-images``), and the
connection ``cometapi_default`` (your API key, or the local emulator).
"""

from __future__ import annotations

import datetime
from pathlib import Path

from airflow.sdk import DAG, Asset, Param

from airflow_provider_cometapi.operators.batch import CreatePredictionBatchOperator

NIGHTLY_BATCH = Asset(name="cometapi_nightly_batch", uri="cometapi://nightly-batch")

SHIPPED_PROMPTS = (Path(__file__).parent / "prompts" / "nightly.jsonl").as_uri()
STORAGE_ROOT = "{{ params.storage_root or var.value.get('cometapi_storage_root', 'file:///tmp/cometapi-images') }}"
# The run's date: its logical date, or for a manual run without one, the day it was triggered.
DAY = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"

with DAG(
    dag_id="cometapi_nightly_batch",
    description="Generate a whole prompt file's images in one batch task and store them under a dated folder.",
    schedule="0 2 * * *",
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["cometapi", "example"],
    params={
        "prompts_uri": Param("", type="string", description="A JSON Lines file of prompts; empty: the shipped one."),
        "model": Param("black-forest-labs/flux-schnell", type="string"),
        "storage_root": Param("", type="string", description="Where to store; empty: Variable or /tmp."),
    },
):
    CreatePredictionBatchOperator(
        task_id="generate",
        model="{{ params.model }}",
        inputs="{{ params.prompts_uri or '" + SHIPPED_PROMPTS + "' }}",
        destination=STORAGE_ROOT + "/nightly/" + DAY,
        deferrable=True,
        max_in_flight=50,
        creates_per_minute=600,
        poll_interval=2,
        timeout=datetime.timedelta(hours=2),
        max_failed=0.05,
        retry_failed=1,
        retries=2,
        outlets=[NIGHTLY_BATCH],
    )
