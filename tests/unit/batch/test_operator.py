"""CreatePredictionBatchOperator against the emulator: both ways of waiting, resume, policy, timeout, kill."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_cometapi.batch import run as batch_run
from airflow_provider_cometapi.exceptions import (
    BatchFailedError,
    BatchInputError,
    BatchManifestMismatchError,
    BatchTimeoutError,
    InvalidParameterError,
)
from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
from airflow_provider_cometapi.operators.batch import CreatePredictionBatchOperator

MODEL = "black-forest-labs/flux-schnell"


class TI:
    run_id = "manual__2026-01-01T00:00:00+00:00"
    map_index = -1
    dag_id = "d"
    try_number = 1
    max_tries = 0

    def xcom_push(self, key, value):
        pass


def context():
    return {"ti": TI(), "outlet_events": {}}


def inputs(n, **emulator):
    return [{"prompt": f"p{i}", "seed": i, "_emulator": {"duration": 0.2, **emulator}} for i in range(n)]


def operator(tmp_path, batch, **kwargs):
    kwargs = {"destination": str(tmp_path), "poll_interval": 0.1, "creates_per_minute": 60_000, **kwargs}
    return CreatePredictionBatchOperator(task_id="batch", model=MODEL, inputs=batch, **kwargs)


def lines(result):
    return [json.loads(line) for line in Path(result["manifest"]).read_text().splitlines()]


def run_deferred(make):
    """execute, then each deferral's trigger in a loop and execute_complete on a fresh operator."""
    try:
        return make().execute(context())
    except TaskDeferred as deferred:
        pending = deferred
    cycles = 0
    while True:
        cycles += 1
        (event,) = asyncio.run(_events(pending.trigger))
        try:
            return make().execute_complete(context(), event=event, **(pending.kwargs or {}))
        except TaskDeferred as deferred:
            pending = deferred


async def _events(trigger):
    return [event.payload async for event in trigger.run()]


def test_on_the_worker(tmp_path, cometapi_conn):
    result = operator(tmp_path, inputs(12), max_in_flight=5, deferrable=False).execute(context())
    assert {k: result[k] for k in ("total", "succeeded", "failed", "predictions", "stored_files")} == {
        "total": 12, "succeeded": 12, "failed": 0, "predictions": 12, "stored_files": 24,
    }  # fmt: skip
    assert cometapi_conn.stats()["creates"] == 12
    assert result["manifest"] == f"{tmp_path}/batch.manual__2026-01-01T00_00_00_00_00.manifest.jsonl"
    assert [line["status"] for line in lines(result)] == ["succeeded"] * 12
    assert not list(tmp_path.glob(".*journal"))  # a finished batch leaves only the manifest


def test_deferred_in_waves(tmp_path, cometapi_conn):
    result = run_deferred(lambda: operator(tmp_path, inputs(12), max_in_flight=4, deferrable=True))
    assert (result["succeeded"], cometapi_conn.stats()["creates"]) == (12, 12)


def test_without_destination_the_manifest_keeps_the_urls(tmp_path, cometapi_conn):
    result = operator(tmp_path, ["a fox", "a cat"], destination=None, manifest=f"{tmp_path}/m.jsonl").execute(context())
    assert result["manifest"] == f"{tmp_path}/m.jsonl" and result["stored_files"] == 0
    assert all(line["outputs"][0].startswith("http") and line["stored"] is None for line in lines(result))
    # When each ended, as the gateway said: its URLs expire an hour after (the Images tab says so).
    assert all(line["completed_at"] and line["completed_at"].startswith("20") for line in lines(result))


class Killed(BaseException):
    """A worker killed mid-wave: nothing after it runs."""


def crash_after(monkeypatch, creates, *, lose_checkpoints):
    real = CometAPIHook.create_prediction
    count, lock = [0], threading.Lock()

    def create(self, *args, **kwargs):
        with lock:  # creates go out from several threads at once
            if count[0] >= creates:
                raise Killed
            count[0] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CometAPIHook, "create_prediction", create)
    if lose_checkpoints:  # SIGKILL: the manifest as first written (all pending); only the journal knows
        real_checkpoint, calls = batch_run.BatchRun.checkpoint, [0]

        def checkpoint(self, *, force=False):
            calls[0] += 1
            if calls[0] == 1:
                real_checkpoint(self, force=True)

        monkeypatch.setattr(batch_run.BatchRun, "checkpoint", checkpoint)


@pytest.mark.parametrize("lose_checkpoints", [False, True], ids=["killed-task", "sigkill-journal"])
def test_resume_after_a_crash_never_creates_twice(tmp_path, cometapi_conn, monkeypatch, lose_checkpoints):
    batch = inputs(15)
    with monkeypatch.context() as patch:
        crash_after(patch, 7, lose_checkpoints=lose_checkpoints)
        with pytest.raises(Killed):
            operator(tmp_path, batch, max_in_flight=10, deferrable=False).execute(context())
    assert cometapi_conn.stats()["creates"] == 7
    result = operator(tmp_path, batch, max_in_flight=10, deferrable=False).execute(context())
    assert cometapi_conn.stats()["creates"] == 15  # the 7 resumed, the 8 others created once
    assert result["succeeded"] == 15
    assert len({line["prediction_id"] for line in lines(result)}) == 15


def test_a_cleared_finished_batch_creates_nothing(tmp_path, cometapi_conn):
    operator(tmp_path, inputs(3), deferrable=False).execute(context())
    result = operator(tmp_path, inputs(3), deferrable=False).execute(context())
    assert (result["succeeded"], cometapi_conn.stats()["creates"]) == (3, 3)


def test_a_manifest_for_other_inputs_is_refused(tmp_path, cometapi_conn):
    operator(tmp_path, inputs(3), deferrable=False).execute(context())
    with pytest.raises(BatchManifestMismatchError):
        operator(tmp_path, inputs(4), deferrable=False).execute(context())
    assert cometapi_conn.stats()["creates"] == 3


def test_failures_within_max_failed_and_retries(tmp_path, cometapi_conn):
    batch = inputs(6) + inputs(2, outcome="failed")
    result = operator(tmp_path, batch, max_failed=2, retry_failed=1, deferrable=False).execute(context())
    assert (result["succeeded"], result["failed"], result["predictions"]) == (6, 2, 10)
    assert cometapi_conn.stats()["creates"] == 10  # each failing input tried twice, no more
    failed = [line for line in lines(result) if line["status"] == "failed"]
    assert [(line["attempts"], len(line["previous_ids"])) for line in failed] == [(2, 1), (2, 1)]


def test_more_failures_than_max_failed_fail_the_task(tmp_path, cometapi_conn):
    batch = inputs(2, outcome="failed") + inputs(3)
    with pytest.raises(BatchFailedError, match="max_failed=1") as raised:
        operator(tmp_path, batch, max_failed=1, deferrable=False).execute(context())
    assert raised.value.manifest.endswith(".manifest.jsonl")
    # It stops as soon as the policy is exceeded: the two failures, and what was still running cancelled.
    recorded = [json.loads(line) for line in Path(raised.value.manifest).read_text().splitlines()]
    assert [line["status"] for line in recorded[:2]] == ["failed", "failed"]
    assert all(line["status"] == "succeeded" or line["cancelled"] for line in recorded[2:])
    assert raised.value.counts["failed"] == 2 + sum(line["status"] == "canceled" for line in recorded[2:])


def test_timeout_cancels_every_unfinished_prediction(tmp_path, cometapi_conn):
    batch = inputs(2) + inputs(3, outcome="never")
    with pytest.raises(BatchTimeoutError, match="timeout of 1.5s"):
        operator(tmp_path, batch, timeout=1.5, deferrable=False).execute(context())
    assert cometapi_conn.stats()["cancels"] == 3
    recorded = [json.loads(line) for line in next(tmp_path.glob("*.manifest.jsonl")).read_text().splitlines()]
    assert [(line["status"], line["cancelled"]) for line in recorded[2:]] == [("canceled", True)] * 3


def test_on_kill_cancels_what_is_in_flight(tmp_path, cometapi_conn):
    op = operator(tmp_path, inputs(4, outcome="never"), deferrable=True)
    with pytest.raises(TaskDeferred):
        op.execute(context())
    op.on_kill()
    assert cometapi_conn.stats()["cancels"] == 4
    recorded = [json.loads(line) for line in next(tmp_path.glob("*.manifest.jsonl")).read_text().splitlines()]
    assert all(line["cancelled"] and "killed" in line["error"] for line in recorded)


def test_bad_inputs_are_named_by_index_and_line_before_any_create(tmp_path, cometapi_conn):
    with pytest.raises(BatchInputError, match="input 1: .*aspect_ratio") as raised:
        operator(tmp_path, ["ok", {"prompt": "x", "aspect_ratio": "2:1"}], deferrable=False).execute(context())
    assert raised.value.index == 1
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('"a fox"\n\n{"prompt": "a cat"\n{"prompt": ""}\n')
    with pytest.raises(
        BatchInputError, match=r"input 1 \(line 3\): the line is not JSON.*input 2 \(line 4\)"
    ) as raised:
        operator(tmp_path, prompts.as_uri(), deferrable=False).execute(context())
    assert (raised.value.index, raised.value.line) == (1, 3)
    with pytest.raises(BatchInputError, match="Cannot read the inputs file"):
        operator(tmp_path, (tmp_path / "none.jsonl").as_uri(), deferrable=False).execute(context())
    assert cometapi_conn.stats()["creates"] == 0


def test_inputs_from_a_jsonl_file(tmp_path, cometapi_conn):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('"a fox"\n{"prompt": "a cat", "aspect_ratio": "16:9"}\n')
    result = operator(tmp_path, prompts.as_uri(), deferrable=False).execute(context())
    assert result["succeeded"] == 2
    assert [line["line"] for line in lines(result)] == [1, 2]


@pytest.mark.parametrize(
    "kwargs",
    [{"max_in_flight": 0}, {"creates_per_minute": 0}, {"max_failed": -1}, {"retry_failed": 99}, {"timeout": 0},
     {"poll_interval": float("nan")}],
)  # fmt: skip
def test_arguments_are_checked_at_parse(tmp_path, kwargs):
    with pytest.raises(InvalidParameterError):
        operator(tmp_path, ["a"], **kwargs)


def test_throttled_creates_slow_the_pace_and_are_not_repeated(tmp_path, cometapi_conn):
    cometapi_conn.add_fault(kind="throttle", route="create", count=4, retry_after=0.05)
    op = operator(tmp_path, inputs(6), deferrable=False)
    result = op.execute(context())
    assert result["succeeded"] == 6 and cometapi_conn.stats()["creates"] == 6
    assert op._run is not None and op._run.pacer.throttles >= 4
    assert op._run.pacer.rate < op._run.pacer.limit


def test_a_gateway_that_limits_creates_slows_the_batch_without_duplicates(tmp_path, cometapi_conn):
    cometapi_conn.set_create_limit(120, burst=1)  # the emulator's per-key limit: 429 with Retry-After
    op = operator(tmp_path, inputs(8), deferrable=False, creates_per_minute=6000)
    result = op.execute(context())
    stats = cometapi_conn.stats()
    assert result["succeeded"] == 8 and stats["creates"] == 8
    assert stats["throttled_creates"] >= 1
    assert op._run is not None and op._run.pacer.throttles >= 1 and op._run.pacer.rate < op._run.pacer.limit


def stored_before_each_create(monkeypatch, folder):
    """How many inputs had their outputs stored (their sidecar written) when each create went out."""
    real, seen = CometAPIHook.create_prediction, []

    def create(self, *args, **kwargs):
        seen.append(len(list(folder.glob("*.json"))))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CometAPIHook, "create_prediction", create)
    return seen


def test_creating_goes_on_while_earlier_predictions_end_and_are_stored(tmp_path, cometapi_conn, monkeypatch):
    seen = stored_before_each_create(monkeypatch, tmp_path)
    op = operator(tmp_path, inputs(30), max_in_flight=100, creates_per_minute=300, deferrable=False)
    result = op.execute(context())
    assert result["succeeded"] == 30 and cometapi_conn.stats()["creates"] == 30
    # 5 creates a second for 6 s against predictions of under a second polled every 0.1 s: by
    # the last create many of the first ones are stored, with no pause in the creates for it.
    assert seen[-1] >= 5
    assert op._run is not None and op._run.in_flight == 0


def test_deferred_only_once_everything_is_created(tmp_path, cometapi_conn, monkeypatch):
    seen = stored_before_each_create(monkeypatch, tmp_path)
    op = operator(tmp_path, inputs(30), max_in_flight=100, creates_per_minute=300, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context())
    assert cometapi_conn.stats()["creates"] == 30 and seen[-1] >= 5
    ids = deferred.value.trigger.prediction_ids
    assert 0 < len(ids) < 30  # only those still running: the rest were stored on the way
    (event,) = asyncio.run(_events(deferred.value.trigger))
    fresh = operator(tmp_path, inputs(30), max_in_flight=100, creates_per_minute=300, deferrable=True)
    result = fresh.execute_complete(context(), event=event, **(deferred.value.kwargs or {}))
    assert result["succeeded"] == 30 and cometapi_conn.stats()["creates"] == 30


def test_running_counts_match_the_entries(tmp_path, cometapi_conn):
    batch = inputs(6) + inputs(3, outcome="failed")
    op = operator(tmp_path, batch, max_failed=3, retry_failed=1, deferrable=False, max_in_flight=4)
    result = op.execute(context())
    run = op._run
    assert run is not None and (result["succeeded"], result["failed"]) == (6, 3)
    assert run.in_flight == len(run.running()) == 0
    assert run.failed_for_good() == sum(1 for e in run.entries if e.unsuccessful and not run.policy.may_retry(e)) == 3
