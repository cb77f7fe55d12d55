"""A batch whose manifest is in S3 (moto in server mode on loopback): its journal keeps every id."""

from __future__ import annotations

import json

import pytest

from airflow_provider_cometapi.batch import journal as batch_journal
from airflow_provider_cometapi.batch.journal import ObjectJournal
from tests.fixtures import S3_BUCKET as BUCKET
from tests.unit.batch.test_operator import Killed, context, crash_after, inputs, operator

pytest.importorskip("boto3")
pytest.importorskip("s3fs")
pytestmark = pytest.mark.integration


def destination(name):
    return f"s3://aws_moto@{BUCKET}/batches/{name}"


def keys(s3, prefix):
    return sorted(obj["Key"] for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


def killed_then_resumed(where, batch):
    with pytest.MonkeyPatch.context() as patch:
        # Killed after 7 creates, the manifest as first written (all pending): only the journal knows.
        crash_after(patch, 7, lose_checkpoints=True)
        with pytest.raises(Killed):
            operator(None, batch, destination=where, max_in_flight=10, deferrable=False).execute(context())
    return operator(None, batch, destination=where, max_in_flight=10, deferrable=False).execute(context())


def test_sigkill_between_checkpoints_never_creates_twice(cometapi_conn, s3):
    result = killed_then_resumed(destination("sigkill"), inputs(15))
    assert cometapi_conn.stats()["creates"] == 15  # the 7 resumed, the 8 others created once
    assert result["succeeded"] == 15
    manifest = s3.get_object(Bucket=BUCKET, Key=result["manifest"].split(f"{BUCKET}/", 1)[1])["Body"].read()
    assert len({json.loads(line)["prediction_id"] for line in manifest.splitlines()}) == 15
    # A finished batch leaves its images, sidecars and manifest, and no journal entry.
    assert not [key for key in keys(s3, "batches/sigkill/") if ".journal.d/" in key]


def test_without_the_journal_the_same_kill_pays_twice(cometapi_conn, s3, monkeypatch):
    """The test above can fail: with a journal that keeps nothing, the same kill creates again."""

    class Forgetful(ObjectJournal):
        def append(self, index, prediction_id, attempt=1):
            pass

    monkeypatch.setattr(batch_journal, "ObjectJournal", Forgetful)
    killed_then_resumed(destination("forgetful"), inputs(15))
    assert cometapi_conn.stats()["creates"] == 22


def test_a_failed_journal_write_keeps_the_id_for_the_next_checkpoint(cometapi_conn, s3, monkeypatch, capsys):
    def refuse(self, index, prediction_id, attempt=1):
        raise PermissionError("write-only bucket policy")

    monkeypatch.setattr(ObjectJournal, "append", refuse)
    result = operator(None, inputs(3), destination=destination("refused"), deferrable=False).execute(context())
    assert (result["succeeded"], cometapi_conn.stats()["creates"]) == (3, 3)
    said = capsys.readouterr().out
    assert said.count("Could not journal prediction") == 1  # once, not once per create
    assert "PermissionError" not in said and "write-only bucket policy" in said


def test_a_new_manifest_never_takes_the_ids_an_earlier_batch_journaled(cometapi_conn, s3, monkeypatch):
    # A batch killed between checkpoints leaves its ids in the journal; the user deletes the
    # manifest to start over. The new batch, killed and resumed in turn, must not take those ids.
    where = destination("started-over")
    crashed = inputs(15)
    with pytest.MonkeyPatch.context() as patch:
        crash_after(patch, 7, lose_checkpoints=True)
        with pytest.raises(Killed):
            operator(None, crashed, destination=where, max_in_flight=10, deferrable=False).execute(context())
    journaled = [key for key in keys(s3, "batches/started-over/") if ".journal.d/" in key]
    assert len(journaled) == 7
    old_ids = {key.rsplit(".", 1)[1] for key in journaled}
    (manifest_key,) = [key for key in keys(s3, "batches/started-over/") if key.endswith(".manifest.jsonl")]
    s3.delete_object(Bucket=BUCKET, Key=manifest_key)

    # The journal's deletes after a checkpoint are best effort, in the background: here none lands
    # (a kill right after the new manifest is written), so only starting a new journal protects.
    monkeypatch.setattr(ObjectJournal, "clear", lambda self: None)
    result = killed_then_resumed(where, crashed)
    assert result["succeeded"] == 15
    assert cometapi_conn.stats()["creates"] == 7 + 15  # the new batch created its own, each once
    manifest = s3.get_object(Bucket=BUCKET, Key=manifest_key)["Body"].read()
    assert not {json.loads(line)["prediction_id"] for line in manifest.splitlines()} & old_ids
