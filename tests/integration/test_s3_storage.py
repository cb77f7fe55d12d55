"""Storing outputs on S3: a real S3-compatible server (moto in server mode) on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
from airflow_provider_cometapi.operators.storage import SavePredictionOutputsOperator
from tests.fixtures import TaskInstance, set_connection

boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")
pytestmark = pytest.mark.integration

BUCKET = "generated-images"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    port = _free_port()
    server = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    set_connection(
        monkeypatch,
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
        },
        conn_id="aws_moto",
    )
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=BUCKET)
    return client


def test_outputs_and_sidecar_land_in_the_bucket(cometapi_conn, s3):
    prediction = CometAPIHook().create_prediction(
        "black-forest-labs/flux-schnell",
        {"prompt": "a harbour at night", "num_outputs": 2, "_emulator": {"duration": 0.1}},
        wait=10,
    )
    uris = SavePredictionOutputsOperator(
        task_id="store", prediction_id=prediction.id, destination=f"s3://aws_moto@{BUCKET}/daily/2026-11-22"
    ).execute({"ti": TaskInstance()})
    keys = sorted(obj["Key"] for obj in s3.list_objects_v2(Bucket=BUCKET)["Contents"])
    assert keys == [f"daily/2026-11-22/{prediction.id}{suffix}" for suffix in (".json", "_0.webp", "_1.webp")]
    assert [uri.rsplit("/", 1)[-1] for uri in uris] == [f"{prediction.id}_0.webp", f"{prediction.id}_1.webp"]
    assert all(uri.startswith(f"s3://aws_moto@{BUCKET}/daily/2026-11-22/") for uri in uris)
    image = s3.get_object(Bucket=BUCKET, Key=f"daily/2026-11-22/{prediction.id}_0.webp")["Body"].read()
    assert image[:4] == b"RIFF" and image[8:12] == b"WEBP"
    sidecar = json.loads(s3.get_object(Bucket=BUCKET, Key=f"daily/2026-11-22/{prediction.id}.json")["Body"].read())
    assert sidecar["input"]["prompt"] == "a harbour at night"
