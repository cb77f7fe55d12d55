"""PredictionBatchTrigger and its loop: kwargs, size bound, one event, polls per interval (emulator)."""

from __future__ import annotations

import asyncio
import json
import random
import string
import time

import pytest

from airflow_provider_cometapi.batch.watch import read_batch_event
from airflow_provider_cometapi.exceptions import InvalidParameterError, InvalidPredictionIdError, UnexpectedEventError
from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
from airflow_provider_cometapi.triggers.batch import PredictionBatchTrigger

CLASSPATH = "airflow_provider_cometapi.triggers.batch.PredictionBatchTrigger"
MODEL = "black-forest-labs/flux-schnell"


def test_serialize_round_trip():
    trigger = PredictionBatchTrigger(
        ["a1", "b2"], "conn", poll_interval=2, deadline=123.5, resume_after=5, flush_after=600, progress=[10, 3, 1],
        deferred_at=100.25, min_defer_seconds=8,
    )  # fmt: skip
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH
    assert kwargs == {
        "prediction_ids": ["a1", "b2"],
        "cometapi_conn_id": "conn",
        "poll_interval": 2.0,
        "deadline": 123.5,
        "resume_after": 2,  # never more than there are predictions
        "flush_after": 600.0,
        "progress": [10, 3, 1],
        "cancel_on_kill": True,
        "deferred_at": 100.25,
        "min_defer_seconds": 8.0,
    }
    assert PredictionBatchTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_kwargs_stay_small_at_10000_inputs():
    # The kwargs hold the ids in flight, never the batch: at 10,000 inputs and max_in_flight 1,000 ...
    ids = ["".join(random.choices(string.ascii_lowercase + string.digits, k=26)) for _ in range(1000)]
    trigger = PredictionBatchTrigger(ids, deadline=time.time(), resume_after=500, progress=[10_000, 9_000, 37])
    size = len(json.dumps(trigger.serialize()[1]))
    assert size <= 31_000  # docs/batch.md: about 30 bytes per id in flight plus 200
    assert len(json.dumps(PredictionBatchTrigger(ids[:100], progress=[10_000, 0, 0]).serialize()[1])) <= 3_300
    assert set(trigger.serialize()[1]) == {
        "prediction_ids", "cometapi_conn_id", "poll_interval", "deadline", "resume_after", "flush_after", "progress",
        "cancel_on_kill", "deferred_at", "min_defer_seconds",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"prediction_ids": []}, InvalidParameterError),
        ({"prediction_ids": "abc"}, InvalidParameterError),
        ({"prediction_ids": ["a"] * 1001}, InvalidParameterError),
        ({"prediction_ids": ["../x"]}, InvalidPredictionIdError),
        ({"prediction_ids": ["a"], "poll_interval": 0}, InvalidParameterError),
        ({"prediction_ids": ["a"], "resume_after": 0}, InvalidParameterError),
        ({"prediction_ids": ["a"], "progress": [1, 2]}, InvalidParameterError),
        ({"prediction_ids": ["a"], "deferred_at": float("nan")}, InvalidParameterError),
        ({"prediction_ids": ["a"], "deferred_at": "now"}, InvalidParameterError),
        ({"prediction_ids": ["a"], "min_defer_seconds": -1}, InvalidParameterError),
        ({"prediction_ids": ["a"], "min_defer_seconds": 301}, InvalidParameterError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        PredictionBatchTrigger(**kwargs)


def test_read_batch_event_refuses_what_is_not_ours():
    good = {"v": 1, "reason": "done", "finished": {"a": "succeeded", "b": "lost"}, "message": "m"}
    assert read_batch_event(good) == good
    for bad in (None, {**good, "v": 2}, {**good, "reason": "x"}, {**good, "finished": {"a": "processing"}},
                {**good, "finished": {"../a": "failed"}}, {**good, "finished": []}):  # fmt: skip
        with pytest.raises(UnexpectedEventError):
            read_batch_event(bad)


def create(hook: CometAPIHook, n: int, **emulator) -> list[str]:
    return [
        hook.create_prediction(MODEL, {"prompt": f"p{i}", "_emulator": {"duration": 0.3, **emulator}}).id
        for i in range(n)
    ]


async def events(trigger: PredictionBatchTrigger) -> list[dict]:
    return [event.payload async for event in trigger.run()]


def test_one_event_when_all_end_each_polled_at_most_once_per_interval(hook, cometapi_conn):
    ids = create(hook, 20)
    started = time.monotonic()
    trigger = PredictionBatchTrigger(ids, poll_interval=0.2, deadline=time.time() + 30, resume_after=20)
    (event,) = asyncio.run(events(trigger))
    elapsed = time.monotonic() - started
    assert event["reason"] == "done" and event["finished"] == dict.fromkeys(ids, "succeeded")
    polls = cometapi_conn.stats()["predictions"]
    assert all(1 <= polls[i]["polls"] <= elapsed / 0.2 + 1 for i in ids), polls


def test_fires_once_resume_after_have_ended(hook, cometapi_conn):
    quick, slow = create(hook, 3), create(hook, 3, outcome="never")
    trigger = PredictionBatchTrigger(quick + slow, poll_interval=0.1, deadline=time.time() + 30, resume_after=3)
    (event,) = asyncio.run(events(trigger))
    assert event["reason"] == "ready" and set(event["finished"]) == set(quick)


def test_deadline_gives_a_timeout_event_with_what_ended(hook, cometapi_conn):
    done, never = create(hook, 2), create(hook, 2, outcome="never")
    trigger = PredictionBatchTrigger(done + never, poll_interval=0.1, deadline=time.time() + 1.0, resume_after=4)
    (event,) = asyncio.run(events(trigger))
    assert event["reason"] == "timeout" and set(event["finished"]) == set(done)


def test_an_unknown_id_is_lost_not_a_dead_trigger(cometapi_conn):
    trigger = PredictionBatchTrigger(["doesnotexist1"], poll_interval=0.1, deadline=time.time() + 10)
    (event,) = asyncio.run(events(trigger))
    assert event == {**event, "reason": "done", "finished": {"doesnotexist1": "lost"}}


def test_on_kill_cancels_every_prediction(hook, cometapi_conn):
    ids = create(hook, 5, outcome="never")
    asyncio.run(PredictionBatchTrigger(ids).on_kill())
    stats = cometapi_conn.stats()
    assert stats["cancels"] == 5
    assert {stats["predictions"][i]["status"] for i in ids} == {"canceled"}


# --- The hold: no event before min_defer_seconds after the deferral (apache/airflow#72716) ---


def test_the_hold_is_read_where_the_trigger_is_built(monkeypatch):
    # tests/conftest.py turns it off for dag.test(); a deployment sets it in airflow.cfg or the environment.
    before = time.time()
    trigger = PredictionBatchTrigger(["a1"])
    assert before <= trigger.deferred_at <= time.time()
    assert trigger.min_defer_seconds == 0
    monkeypatch.setenv("AIRFLOW__COMETAPI__MIN_DEFER_SECONDS", "2.5")
    assert PredictionBatchTrigger(["a1"]).min_defer_seconds == 2.5
    monkeypatch.delenv("AIRFLOW__COMETAPI__MIN_DEFER_SECONDS")
    assert PredictionBatchTrigger(["a1"]).min_defer_seconds == 5 + 3  # [workers] min_heartbeat_interval + 3
    monkeypatch.setenv("AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL", "20")
    assert PredictionBatchTrigger(["a1"]).min_defer_seconds == 23
    for bad in ("soon", "-1", "nan", "1000"):
        monkeypatch.setenv("AIRFLOW__COMETAPI__MIN_DEFER_SECONDS", bad)
        with pytest.raises(InvalidParameterError, match=r"\[cometapi\] min_defer_seconds"):
            PredictionBatchTrigger(["a1"])
    # Built again from its kwargs (a triggerer restart), it keeps what the worker decided.
    kwargs = PredictionBatchTrigger(["a1"], deferred_at=50.0, min_defer_seconds=4).serialize()[1]
    assert (
        PredictionBatchTrigger(**kwargs).min_defer_seconds == 4 and PredictionBatchTrigger(**kwargs).deferred_at == 50
    )


def test_an_early_event_is_held_while_polling_goes_on(hook, cometapi_conn):
    # Without the hold it fires at the first that ended (0.3 s); held 2 s, it holds the later ones too.
    quick, later = create(hook, 3), create(hook, 3, duration=1.0)
    started = time.time()
    trigger = PredictionBatchTrigger(
        quick + later,
        poll_interval=0.2,
        deadline=started + 30,
        resume_after=1,
        deferred_at=started,
        min_defer_seconds=2,
    )
    (event,) = asyncio.run(events(trigger))
    elapsed = time.time() - started
    assert 2.0 <= elapsed < 3.5, elapsed
    assert event["reason"] == "done" and event["finished"] == dict.fromkeys(quick + later, "succeeded")
    polls = cometapi_conn.stats()["predictions"]
    assert all(1 <= polls[i]["polls"] <= 1.0 / 0.2 + 2 for i in later), polls  # polled on, at the pace
    assert all(polls[i]["polls"] <= 0.3 / 0.2 + 2 for i in quick), polls  # an ended one is not polled again


def test_nothing_left_to_poll_the_hold_is_one_sleep(hook, cometapi_conn):
    ids = create(hook, 2)
    started = time.time()
    trigger = PredictionBatchTrigger(
        ids, poll_interval=0.5, deadline=started + 30, deferred_at=started, min_defer_seconds=2
    )
    (event,) = asyncio.run(events(trigger))
    assert 2.0 <= time.time() - started < 3.0
    assert event["reason"] == "done"
    assert sum(p["polls"] for p in cometapi_conn.stats()["predictions"].values()) == 2  # one poll each, then a sleep


def test_a_restarted_triggerer_does_not_restart_the_hold(hook, cometapi_conn):
    # Deferred 10 s ago with an 8 s hold: the trigger re-created from its kwargs fires at once.
    ids = create(hook, 2)
    kwargs = PredictionBatchTrigger(
        ids, poll_interval=0.2, deadline=time.time() + 30, deferred_at=time.time() - 10, min_defer_seconds=8
    ).serialize()[1]
    time.sleep(0.4)  # they have ended
    started = time.monotonic()
    (event,) = asyncio.run(events(PredictionBatchTrigger(**kwargs)))
    assert time.monotonic() - started < 1.0
    assert event["reason"] == "done"


def test_a_deadline_in_the_hold_still_ends_it(hook, cometapi_conn):
    never = create(hook, 2, outcome="never")
    started = time.time()
    trigger = PredictionBatchTrigger(
        never, poll_interval=0.2, deadline=started + 0.5, deferred_at=started, min_defer_seconds=1.5
    )
    (event,) = asyncio.run(events(trigger))
    assert 1.5 <= time.time() - started < 2.6
    assert event["reason"] == "timeout"
