"""The batch's creates overlap (a slow gateway still keeps pace), and none in flight is lost when the loop stops."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from airflow_provider_cometapi.batch import run as batch_run
from airflow_provider_cometapi.exceptions import AuthenticationError
from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
from tests.unit.batch.test_operator import context, inputs, lines, operator


@pytest.fixture
def concurrency(monkeypatch):
    """The most creates the hook had in flight at once, and the prompts it sent."""
    real, lock = CometAPIHook.create_prediction, threading.Lock()
    seen = {"now": 0, "most": 0, "prompts": []}

    def create(self, model, input, **kwargs):
        with lock:
            seen["now"] += 1
            seen["most"] = max(seen["most"], seen["now"])
            seen["prompts"].append(input["prompt"])
        try:
            return real(self, model, input, **kwargs)
        finally:
            with lock:
                seen["now"] -= 1

    monkeypatch.setattr(CometAPIHook, "create_prediction", create)
    return seen


def test_creates_overlap_against_a_slow_gateway(tmp_path, cometapi_conn, concurrency):
    cometapi_conn.add_fault(kind="slow", route="create", count=-1, delay=0.3)
    op = operator(tmp_path, inputs(24), max_in_flight=100, deferrable=False)
    result = op.execute(context())
    assert result["succeeded"] == 24 and cometapi_conn.stats()["creates"] == 24
    # Each create waits 0.3 s on the gateway: several went out at once, never more than the pool.
    assert 4 <= concurrency["most"] <= batch_run.CREATE_CONCURRENCY
    assert Counter(concurrency["prompts"]) == Counter(f"p{i}" for i in range(24))  # each input once


def test_max_in_flight_counts_the_creates_still_in_flight(tmp_path, cometapi_conn, concurrency):
    cometapi_conn.add_fault(kind="slow", route="create", count=-1, delay=0.2)
    op = operator(tmp_path, inputs(10, duration=0.5), max_in_flight=2, deferrable=False)
    result = op.execute(context())
    assert result["succeeded"] == 10 and cometapi_conn.stats()["creates"] == 10
    assert concurrency["most"] <= 2


def test_creates_in_flight_when_the_batch_stops_are_recorded_and_never_sent_again(tmp_path, cometapi_conn, concurrency):
    # Three creates hang for a second; the fourth is refused for good (a bad key). The batch
    # stops, but only once the creates in flight (the three, and any sent beside the fourth)
    # have answered and their ids are in the manifest.
    cometapi_conn.add_fault(kind="slow", route="create", count=3, delay=1.0)
    cometapi_conn.add_fault(kind="error", route="create", count=1, status=401)
    batch = inputs(8, duration=0.2)
    with pytest.raises(AuthenticationError):
        operator(tmp_path, batch, max_in_flight=100, deferrable=False).execute(context())
    manifest = sorted(tmp_path.glob("*.manifest.jsonl"))
    assert len(manifest) == 1
    recorded = [line for line in map(_json, manifest[0].read_text().splitlines()) if line["prediction_id"]]
    assert len(recorded) == cometapi_conn.stats()["creates"] >= 3

    # The retry creates only the rest: every input once in all.
    result = operator(tmp_path, batch, max_in_flight=100, deferrable=False).execute(context())
    assert result["succeeded"] == 8 and cometapi_conn.stats()["creates"] == 8
    assert len({line["prediction_id"] for line in lines(result)}) == 8


def test_a_create_whose_callback_has_not_handed_it_over_is_still_recorded(tmp_path, cometapi_conn, monkeypatch):
    # concurrent.futures.wait returns once a future is done, before its done-callbacks have run:
    # a create can have answered without the loop having been handed it yet. Here the three slow
    # creates' callbacks never hand them over before the loop stops (a bad key on the fourth).
    real, delayed = CometAPIHook.create_prediction, set()

    def create(self, model, input, **kwargs):
        started = time.monotonic()
        prediction = real(self, model, input, **kwargs)
        if time.monotonic() - started > 0.5:
            delayed.add(prediction.id)
        return prediction

    real_handover = batch_run.BatchRun._created_one

    def handover(self, future):
        created = future.result()
        if created.prediction is not None and created.prediction.id in delayed:
            return  # its callback "has not run yet" when the loop settles
        real_handover(self, future)

    monkeypatch.setattr(CometAPIHook, "create_prediction", create)
    monkeypatch.setattr(batch_run.BatchRun, "_created_one", handover)
    cometapi_conn.add_fault(kind="slow", route="create", count=3, delay=1.0)
    cometapi_conn.add_fault(kind="error", route="create", count=1, status=401)
    batch = inputs(8, duration=0.2)
    with pytest.raises(AuthenticationError):
        operator(tmp_path, batch, max_in_flight=100, deferrable=False).execute(context())
    assert len(delayed) == 3
    (manifest,) = tmp_path.glob("*.manifest.jsonl")
    recorded = {line["prediction_id"] for line in map(_json, manifest.read_text().splitlines())}
    assert delayed <= recorded

    monkeypatch.setattr(batch_run.BatchRun, "_created_one", real_handover)
    operator(tmp_path, batch, max_in_flight=100, deferrable=False).execute(context())
    assert cometapi_conn.stats()["creates"] == 8  # none of the three was created again


def _json(text):
    import json

    return json.loads(text)
