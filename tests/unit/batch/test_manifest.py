"""The manifest: round trip, strict reading, resume decisions, the journal."""

from __future__ import annotations

import json

import pytest

from airflow_provider_cometapi.batch.journal import FileJournal, replay
from airflow_provider_cometapi.batch.manifest import (
    PENDING,
    ManifestEntry,
    RenderedLines,
    check_matches,
    counts,
    parse_manifest,
    read_manifest,
    render_manifest,
    shown_input,
)
from airflow_provider_cometapi.batch.policy import FailurePolicy
from airflow_provider_cometapi.exceptions import BatchManifestError, BatchManifestMismatchError

FP = "a" * 64


def entry(index: int, **fields) -> ManifestEntry:
    return ManifestEntry(index=index, input={"prompt": f"p{index}"}, fingerprint=FP, **fields)


def text(entries) -> list[str]:
    return b"".join(render_manifest(entries)).decode().splitlines()


def test_round_trip_keeps_every_field():
    entries = [
        entry(0),
        entry(1, line=2, prediction_id="abc", status="succeeded", stored=["file:///x/abc_0.webp"], attempts=1),
        entry(
            2,
            prediction_id="def",
            status="failed",
            error="NSFW",
            attempts=2,
            previous_ids=["old"],
            completed_at="2026-01-01T00:00:05.1Z",
        ),
        entry(3, status="uncertain", error="timed out"),
        entry(4, prediction_id="ghi", status="processing", cancelled=True),
    ]
    assert parse_manifest(text(entries), uri="m") == entries
    assert counts(entries) == {
        "total": 5, "succeeded": 1, "failed": 2, "canceled": 0, "running": 1, "pending": 1, "skipped": 0,
        "predictions": 4,
    }  # fmt: skip


def test_many_lines_render_in_bounded_chunks():
    entries = [entry(i) for i in range(5000)]
    chunks = list(render_manifest(entries))
    assert len(chunks) > 1 and max(len(chunk) for chunk in chunks) < 300 * 1024
    assert len(parse_manifest(b"".join(chunks).decode().splitlines(), uri="m")) == 5000


def test_kept_lines_render_what_a_full_rendering_does():
    entries = [entry(i) for i in range(5)]
    kept = RenderedLines()
    assert b"".join(render_manifest(entries, kept)) == b"".join(render_manifest(entries))
    entries[1].prediction_id, entries[1].status = "abc", "starting"
    entries[3].stored = ["file:///x/abc_0.webp"]
    entries[4].previous_ids.append("old")  # changed in place: seen too
    assert b"".join(render_manifest(entries, kept)) == b"".join(render_manifest(entries))


def test_data_uris_are_shortened_in_the_recorded_input():
    shown = shown_input({"prompt": "x", "input_image": "data:image/png;base64," + "A" * 10_000})
    assert shown["input_image"].endswith("(10022 chars)") and len(shown["input_image"]) < 100


@pytest.mark.parametrize(
    ("lines", "why"),
    [
        (['{"v": 1, "index": 0'], "is not JSON"),  # a truncated line
        (["[1, 2]"], "not a JSON object"),
        ([json.dumps({**entry(0).to_json(), "v": 2})], "version 2"),
        ([json.dumps({**entry(0).to_json(), "index": -1})], "whole number"),
        ([json.dumps({**entry(0).to_json(), "prediction_id": "../../etc"})], "cannot be one"),
        ([json.dumps({**entry(0).to_json(), "status": "succeeded"})], "names no prediction"),
        ([json.dumps({**entry(0).to_json(), "fingerprint": "xyz"})], "fingerprint"),
        ([json.dumps({**entry(0).to_json(), "stored": "file:///x"})], "list of strings"),
        ([json.dumps(entry(0).to_json()), json.dumps(entry(0).to_json())], "a second time"),
        ([json.dumps(entry(0).to_json()), json.dumps(entry(2).to_json())], "lacks input 1"),
    ],
)
def test_a_line_that_is_not_ours_fails_with_its_number(lines, why):
    with pytest.raises(BatchManifestError, match=why) as raised:
        parse_manifest(lines, uri="file:///m.jsonl")
    assert "delete it" in str(raised.value)


def test_blank_lines_are_ignored_and_a_missing_file_is_none(tmp_path):
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    assert parse_manifest(["", json.dumps(entry(0).to_json()), "  "], uri="m") == [entry(0)]
    assert read_manifest(ObjectStoragePath(f"file://{tmp_path}/none.jsonl")) is None


def test_a_manifest_for_other_inputs_is_refused():
    entries = [entry(0), entry(1)]
    check_matches(entries, [FP, FP], uri="m")
    with pytest.raises(BatchManifestMismatchError, match="lists 2 inputs, the batch now has 3"):
        check_matches(entries, [FP, FP, FP], uri="m")
    with pytest.raises(BatchManifestMismatchError, match="input 1"):
        check_matches(entries, [FP, "b" * 64], uri="m")


@pytest.mark.parametrize(
    ("fields", "retry_failed", "retried"),
    [
        ({"prediction_id": "a", "status": "failed", "attempts": 1}, 1, True),
        ({"prediction_id": "a", "status": "aborted", "attempts": 1}, 1, True),
        ({"prediction_id": "a", "status": "canceled", "attempts": 1}, 1, True),
        ({"prediction_id": "a", "status": "failed", "attempts": 2}, 1, False),  # budget spent
        ({"prediction_id": "a", "status": "failed", "attempts": 1}, 0, False),
        ({"prediction_id": "a", "status": "canceled", "attempts": 1, "cancelled": True}, 1, False),  # ours
        ({"status": "failed", "error": "422"}, 3, False),  # rejected: would be rejected again
        ({"status": "uncertain"}, 3, False),  # may exist: never sent again
        ({"prediction_id": "a", "status": "succeeded", "attempts": 1}, 3, False),
        ({"prediction_id": "a", "status": "processing", "attempts": 1}, 3, False),
    ],
)
def test_resume_decisions(fields, retry_failed, retried):
    assert FailurePolicy(retry_failed=retry_failed).may_retry(entry(0, **fields)) is retried


def test_journal_replays_ids_the_manifest_lacks_and_ignores_a_cut_last_line(tmp_path):
    journal = FileJournal(str(tmp_path / ".m.journal"))
    journal.append(0, "first")
    journal.append(2, "third")
    journal.close()
    with open(journal.path, "ab") as handle:
        handle.write(b'{"index":1,"predic')  # the process was killed inside this write
    entries = [entry(0), entry(1), entry(2, prediction_id="third", status="starting", attempts=1)]
    assert journal.read() == {0: ["first"], 2: ["third"]}
    assert replay(entries, journal.read()) == 1
    assert (entries[0].prediction_id, entries[0].status, entries[0].attempts) == ("first", "starting", 1)
    assert entries[1].status == PENDING and entries[2].attempts == 1
    journal.clear()
    assert journal.read() == {}


def test_journal_does_not_bring_back_an_earlier_attempt(tmp_path):
    journal = FileJournal(str(tmp_path / ".m.journal"))
    journal.append(0, "old")
    retried = entry(0, previous_ids=["old"], attempts=1)
    assert replay([retried], journal.read()) == 0


def test_journal_replays_the_new_attempts_of_a_retried_input(tmp_path):
    # The manifest was written while attempt 1 ran; attempts 2 and 3 exist only in the journal.
    journal = FileJournal(str(tmp_path / ".m.journal"))
    journal.append(0, "second")
    journal.append(0, "third")
    assert journal.read() == {0: ["second", "third"]}
    retried = entry(0, prediction_id="first", status="failed", attempts=1)
    assert replay([retried], journal.read()) == 2
    assert (retried.prediction_id, retried.previous_ids, retried.attempts) == ("third", ["first", "second"], 3)
    assert retried.status == "starting" and retried.error is None
    assert replay([retried], journal.read()) == 0  # read twice (the journal not emptied yet): nothing more


def test_a_bad_journal_line_before_the_last_fails(tmp_path):
    path = tmp_path / ".m.journal"
    path.write_bytes(b'garbage\n{"index":0,"prediction_id":"a"}\n')
    with pytest.raises(BatchManifestError, match="line 1 of the journal"):
        FileJournal(str(path)).read()
