"""The Images tab reading a batch's manifest, images and sidecars from S3 (moto on loopback)."""

from __future__ import annotations

import json

import pytest

from airflow_provider_cometapi.plugins.records import TaskRef
from tests.fixtures import S3_BUCKET
from tests.gallery import gallery_over_records
from tests.unit.batch.test_operator import context, inputs, operator

pytest.importorskip("boto3")
pytest.importorskip("s3fs")
pytestmark = pytest.mark.integration


def test_a_batch_stored_in_s3_is_shown_and_served_from_s3(cometapi_conn, s3, monkeypatch):
    where = f"s3://aws_moto@{S3_BUCKET}/gallery/2026-12-01"
    result = operator(None, inputs(3), destination=where, deferrable=False).execute(context())
    assert result["stored_files"] == 6
    manifest_key = result["manifest"].split(f"{S3_BUCKET}/", 1)[1]
    lines = [json.loads(line) for line in s3.get_object(Bucket=S3_BUCKET, Key=manifest_key)["Body"].read().splitlines()]

    with gallery_over_records(monkeypatch) as gallery:
        gallery.values.append((TaskRef("batch"), result))
        page = gallery.client.get("/gallery/d/r/batch")
        assert page.status_code == 200, page.text[:500]
        assert page.text.count("<figure") == 3
        assert all(f"p{i}" in page.text for i in range(3))  # the prompts, from the manifest
        for line in lines:
            (image,) = [uri for uri in line["stored"] if not uri.endswith(".json")]
            name = image.rsplit("/", 1)[1]
            served = gallery.client.get(f"/gallery/d/r/batch/files/{name}")
            assert served.status_code == 200
            key = image.split(f"{S3_BUCKET}/", 1)[1]
            assert served.content == s3.get_object(Bucket=S3_BUCKET, Key=key)["Body"].read()
            assert served.headers["content-type"] == "image/webp"
        # A file in the bucket that the run did not record is not served.
        s3.put_object(Bucket=S3_BUCKET, Key="gallery/2026-12-01/zzzz_0.webp", Body=b"RIFF")
        assert gallery.client.get("/gallery/d/r/batch/files/zzzz_0.webp").status_code == 404
        assert gallery.reads == [result["manifest"]]  # one read of the manifest for it all
