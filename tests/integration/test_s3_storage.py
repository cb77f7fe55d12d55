"""Storing outputs on S3: a real S3-compatible server (moto in server mode) on loopback."""

from __future__ import annotations

import json

import pytest

from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
from airflow_provider_cometapi.operators.storage import SavePredictionOutputsOperator
from tests.fixtures import S3_BUCKET as BUCKET
from tests.fixtures import TaskInstance

pytest.importorskip("boto3")
pytest.importorskip("s3fs")
pytestmark = pytest.mark.integration


def test_outputs_and_sidecar_land_in_the_bucket(cometapi_conn, s3):
    prediction = CometAPIHook().create_prediction(
        "black-forest-labs/flux-schnell",
        {"prompt": "a harbour at night", "num_outputs": 2, "_emulator": {"duration": 0.1}},
        wait=10,
    )
    uris = SavePredictionOutputsOperator(
        task_id="store", prediction_id=prediction.id, destination=f"s3://aws_moto@{BUCKET}/daily/2026-11-22"
    ).execute({"ti": TaskInstance()})
    keys = sorted(obj["Key"] for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix="daily/2026-11-22/")["Contents"])
    assert keys == [f"daily/2026-11-22/{prediction.id}{suffix}" for suffix in (".json", "_0.webp", "_1.webp")]
    assert [uri.rsplit("/", 1)[-1] for uri in uris] == [f"{prediction.id}_0.webp", f"{prediction.id}_1.webp"]
    assert all(uri.startswith(f"s3://aws_moto@{BUCKET}/daily/2026-11-22/") for uri in uris)
    image = s3.get_object(Bucket=BUCKET, Key=f"daily/2026-11-22/{prediction.id}_0.webp")["Body"].read()
    assert image[:4] == b"RIFF" and image[8:12] == b"WEBP"
    sidecar = json.loads(s3.get_object(Bucket=BUCKET, Key=f"daily/2026-11-22/{prediction.id}.json")["Body"].read())
    assert sidecar["input"]["prompt"] == "a harbour at night"
