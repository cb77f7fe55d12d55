"""PredictionTrigger driven against the emulator, as the triggerer drives it."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from airflow_provider_cometapi.triggers.prediction import PredictionTrigger
from tests.fixtures import set_connection

SCHNELL = "black-forest-labs/flux-schnell"
CLASSPATH = "airflow_provider_cometapi.triggers.prediction.PredictionTrigger"


def create(emulator, **control) -> str:
    from airflow_provider_cometapi.hooks.cometapi import CometAPIHook

    return CometAPIHook().create_prediction(SCHNELL, {"prompt": "x", "_emulator": control}).id


async def events_of(trigger: PredictionTrigger) -> list[dict]:
    """All events the trigger yields (there must be exactly one), as the triggerer collects them."""
    return [event.payload async for event in trigger.run()]


async def single_event(trigger: PredictionTrigger) -> dict:
    events = await asyncio.wait_for(events_of(trigger), timeout=30)
    assert len(events) == 1
    return events[0]


def test_serialize_holds_ids_conn_interval_deadline_and_hold_only():
    trigger = PredictionTrigger(
        "p123", "my_conn", poll_interval=2, deadline=1_900_000_000.5, cancel_on_kill=False, not_before=1_800_000_000
    )
    assert trigger.serialize() == (
        CLASSPATH,
        {
            "prediction_id": "p123",
            "cometapi_conn_id": "my_conn",
            "poll_interval": 2.0,
            "deadline": 1_900_000_000.5,
            "cancel_on_kill": False,
            "not_before": 1_800_000_000.0,
        },
    )


async def test_an_early_end_is_held_until_not_before(cometapi_conn):
    # apache/airflow#72716: a resume sooner than the executor's report of the deferral can fail the task.
    prediction_id = create(cometapi_conn, duration=0.2)
    started = time.time()
    event = await single_event(PredictionTrigger(prediction_id, poll_interval=0.1, not_before=started + 1.5))
    assert event["status"] == "succeeded"
    assert time.time() - started >= 1.5
    polls = cometapi_conn.stats(detail=False)["polls"]
    assert polls <= 3, "a held end polls no more"


def test_defer_wait_sets_the_hold_from_the_config(monkeypatch):
    from airflow_provider_cometapi.polling import LogMode, PredictionWatch
    from airflow_provider_cometapi.triggers.prediction import defer_wait

    class Task:
        def defer(self, *, trigger, method_name, timeout):
            self.trigger = trigger
            raise RuntimeError("deferred")

    monkeypatch.setenv("AIRFLOW__COMETAPI__MIN_DEFER_SECONDS", "7")
    task = Task()
    watch = PredictionWatch("p1", 1.0, None, None, LogMode.COLLECT)
    with pytest.raises(RuntimeError, match="deferred"):
        defer_wait(task, watch, cometapi_conn_id="c", timeout=60, cancel_on_kill=True)  # type: ignore[arg-type]
    assert 6.0 < task.trigger.not_before - time.time() <= 7.0


def test_serialize_round_trips_through_airflow_serde():
    from airflow.models.trigger import Trigger
    from airflow.serialization.serialized_objects import BaseSerialization

    trigger = PredictionTrigger("p123", "my_conn", poll_interval=1.5, deadline=time.time() + 60)
    row = Trigger.from_object(trigger)
    assert row.classpath == CLASSPATH
    restored = PredictionTrigger(**row.kwargs)
    assert restored.serialize() == trigger.serialize()
    encoded = BaseSerialization.serialize(trigger.serialize()[1])
    assert BaseSerialization.deserialize(encoded) == trigger.serialize()[1]


async def test_succeeded_event_is_small_and_complete(cometapi_conn):
    prediction_id = create(cometapi_conn)
    event = await single_event(PredictionTrigger(prediction_id, poll_interval=0.1, deadline=time.time() + 30))
    assert event["status"] == "succeeded"
    assert event["prediction_id"] == prediction_id
    assert event["prediction"]["output"]
    assert "logs" not in event["prediction"]
    assert "succeeded" in event["message"]


@pytest.mark.parametrize("outcome", ["failed", "aborted", "canceled"])
async def test_unsuccessful_outcomes_carry_the_prediction_error(cometapi_conn, outcome):
    prediction_id = create(cometapi_conn, outcome=outcome, error=f"emulated {outcome}")
    event = await single_event(PredictionTrigger(prediction_id, poll_interval=0.1))
    assert event["status"] == outcome
    if outcome != "canceled":
        assert f"emulated {outcome}" in event["message"]


async def test_unknown_status_waits_until_the_deadline(cometapi_conn, capfd):
    prediction_id = create(cometapi_conn, unknown_status="queued_elsewhere", duration=60)
    event = await single_event(PredictionTrigger(prediction_id, poll_interval=0.1, deadline=time.time() + 1))
    assert event["status"] == "timeout"
    assert "queued_elsewhere" in event["message"]
    assert "does not know" in capfd.readouterr().out


async def test_unknown_status_then_success(cometapi_conn):
    prediction_id = create(cometapi_conn, unknown_status="queued_elsewhere", duration=0.5)
    event = await single_event(PredictionTrigger(prediction_id, poll_interval=0.1, deadline=time.time() + 10))
    assert event["status"] == "succeeded"


async def test_timeout_event_at_the_deadline(cometapi_conn):
    prediction_id = create(cometapi_conn, outcome="never")
    started = time.monotonic()
    event = await single_event(PredictionTrigger(prediction_id, poll_interval=5, deadline=time.time() + 0.5))
    assert event["status"] == "timeout"
    assert time.monotonic() - started < 2  # the last sleep is cut to the deadline
    assert cometapi_conn.stats()["cancels"] == 0  # cancelling is the task's decision


async def test_deadline_passed_before_start_times_out_without_polling(cometapi_conn):
    prediction_id = create(cometapi_conn, outcome="never")
    event = await single_event(PredictionTrigger(prediction_id, poll_interval=1, deadline=time.time() - 5))
    assert event["status"] == "timeout"
    assert cometapi_conn.stats()["polls"] == 0


async def test_transient_failures_then_success(cometapi_conn):
    prediction_id = create(cometapi_conn)
    cometapi_conn.add_fault(kind="throttle", route="get", count=2, retry_after=0.1)
    cometapi_conn.add_fault(kind="server_error", route="get", count=1, status=502)
    event = await single_event(PredictionTrigger(prediction_id, poll_interval=0.1, deadline=time.time() + 30))
    assert event["status"] == "succeeded"
    assert cometapi_conn.stats(detail=False)["faults_served"] == 3


async def test_persistent_failure_becomes_an_error_event(emulator, monkeypatch):
    set_connection(monkeypatch, {**emulator.connection_dict(), "extra": {"max_retries": 1}})
    prediction_id = create(emulator)
    emulator.add_fault(kind="server_error", route="get", count=-1, status=503)
    event = await single_event(PredictionTrigger(prediction_id, poll_interval=0.1, deadline=time.time() + 60))
    assert event["status"] == "error"
    assert "HTTP 503" in event["message"]


async def test_unknown_prediction_is_an_error_event_at_once(cometapi_conn):
    event = await single_event(PredictionTrigger("doesnotexist", poll_interval=0.1))
    assert event["status"] == "error"
    assert "doesnotexist" in event["message"]
    assert cometapi_conn.stats(detail=False)["polls"] <= 1


async def test_missing_connection_is_an_error_event(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_COMETAPI_DEFAULT", raising=False)
    event = await single_event(PredictionTrigger("p1", poll_interval=0.1))
    assert event["status"] == "error"
    assert "does not exist" in event["message"]


async def test_one_http_session_for_the_whole_run(cometapi_conn, monkeypatch):
    sessions: list[aiohttp.ClientSession] = []
    original_init = aiohttp.ClientSession.__init__

    def counting_init(self, *args, **kwargs):
        sessions.append(self)
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(aiohttp.ClientSession, "__init__", counting_init)
    prediction_id = create(cometapi_conn, duration=1)
    event = await single_event(PredictionTrigger(prediction_id, poll_interval=0.1))
    assert event["status"] == "succeeded"
    assert cometapi_conn.stats()["predictions"][prediction_id]["polls"] >= 5
    assert len(sessions) == 1
    assert sessions[0].closed


async def test_on_kill_cancels_the_prediction(cometapi_conn):
    prediction_id = create(cometapi_conn, outcome="never")
    trigger = PredictionTrigger(prediction_id, poll_interval=0.1)
    task = asyncio.ensure_future(events_of(trigger))
    await asyncio.sleep(0.3)
    task.cancel()  # the triggerer cancels the run, then calls on_kill for a user's kill
    await trigger.on_kill()
    await trigger.cleanup()
    stats = cometapi_conn.stats()
    assert stats["cancels"] == 1
    assert stats["predictions"][prediction_id]["status"] == "canceled"


async def test_cleanup_and_restarts_never_cancel(cometapi_conn):
    prediction_id = create(cometapi_conn, outcome="never")
    trigger = PredictionTrigger(prediction_id, poll_interval=0.1)
    task = asyncio.ensure_future(events_of(trigger))
    await asyncio.sleep(0.3)
    task.cancel()
    await trigger.cleanup()
    assert cometapi_conn.stats()["cancels"] == 0


async def test_on_kill_respects_cancel_on_kill_false(cometapi_conn):
    prediction_id = create(cometapi_conn, outcome="never")
    await PredictionTrigger(prediction_id, cancel_on_kill=False).on_kill()
    assert cometapi_conn.stats()["cancels"] == 0


async def test_the_event_has_the_versioned_shape(cometapi_conn):
    prediction_id = create(cometapi_conn)
    event = await single_event(PredictionTrigger(prediction_id, poll_interval=0.1, deadline=time.time() + 30))
    assert set(event) == {"v", "status", "prediction_id", "prediction", "outputs_shortened", "message"}
    assert event["v"] == 1
    assert event["outputs_shortened"] is False


async def test_a_dripping_gateway_cannot_hold_the_trigger_past_its_deadline(cometapi_conn):
    prediction_id = create(cometapi_conn, outcome="never")
    cometapi_conn.add_fault(kind="slow", route="get", count=-1, delay=5)
    started = time.monotonic()
    event = await single_event(PredictionTrigger(prediction_id, poll_interval=0.2, deadline=time.time() + 1))
    assert event["status"] == "timeout"  # not "error": the deadline cut the poll, and a timeout cancels
    assert "the last poll failed" in event["message"]
    assert time.monotonic() - started < 2.5


async def test_the_outcome_and_the_log_are_one_record(cometapi_conn, capfd):
    prediction_id = create(cometapi_conn, duration=0.3)
    event = await single_event(PredictionTrigger(prediction_id, poll_interval=0.1, deadline=time.time() + 30))
    out = capfd.readouterr().out
    assert f"{event['message']} Statuses: " in out and "succeeded. Its log:" in out
    assert out.count("Using seed") == 1
    # Nothing while it waits (under a minute): the statuses are said once, in the outcome.
    assert f"Prediction {prediction_id}: status" not in out
    assert out.count(f"Prediction {prediction_id}") == 1


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": float("nan")}, "poll_interval"),
        ({"poll_interval": float("inf")}, "poll_interval"),
        ({"deadline": float("nan")}, "deadline"),
        ({"deadline": float("inf")}, "deadline"),
        ({"deadline": "tomorrow"}, "deadline"),
    ],
)
def test_arguments_that_cannot_work_are_refused(kwargs, name):
    from airflow_provider_cometapi.exceptions import InvalidParameterError

    with pytest.raises(InvalidParameterError, match=f"^{name} must be"):
        PredictionTrigger("p1", **kwargs)


async def test_on_kill_cancel_is_bounded(cometapi_conn, monkeypatch):
    from airflow_provider_cometapi.triggers import prediction as trigger_module

    monkeypatch.setattr(trigger_module, "CANCEL_TIMEOUT", 0.5)
    prediction_id = create(cometapi_conn, outcome="never")
    cometapi_conn.add_fault(kind="slow", route="cancel", count=-1, delay=5)
    started = time.monotonic()
    await PredictionTrigger(prediction_id).on_kill()  # logs a warning, never raises
    assert time.monotonic() - started < 2


def test_the_guide_shows_the_event_as_the_code_builds_it():
    import json
    import re
    from pathlib import Path
    from typing import get_type_hints

    from airflow_provider_cometapi.polling import PredictionEvent, read_event

    guide = (Path(__file__).resolve().parents[3] / "docs" / "operators.md").read_text()
    (sample,) = re.findall(r"```json\n(\{\n  \"v\".*?)```", guide, re.S)
    shown = json.loads(sample)
    assert set(shown) == set(get_type_hints(PredictionEvent))
    assert read_event(shown) == shown


async def test_an_unexpected_error_event_shows_no_query_or_user_info(monkeypatch, capfd):
    """A bug's message may name a signed URL it tried; the event and the log show it as every message does."""
    from airflow_provider_cometapi.triggers import prediction as trigger_module

    signed = "https://reader:hunter2-userinfo@files.example/out-0.png?X-Amz-Signature=9c1e5b7a3f0d"

    async def broken(hook, watch):  # a bug of our own: nothing that runs here raises outside CometAPIError
        raise RuntimeError(f"could not read {signed} (chunk 3)")

    monkeypatch.setattr(trigger_module, "await_prediction", broken)
    event = await single_event(PredictionTrigger("p1", poll_interval=0.1))
    assert event["status"] == "error"
    shown = "failed unexpectedly: RuntimeError: could not read https://files.example/out-0.png (chunk 3)"
    assert shown in event["message"]
    logged = capfd.readouterr().out
    assert shown in logged and "in broken" in logged, "the log keeps the redacted message and the frames"
    for secret in ("hunter2-userinfo", "X-Amz-Signature", "9c1e5b7a3f0d"):
        assert secret not in event["message"] and secret not in logged


async def test_an_unexpected_error_event_is_bounded(monkeypatch):
    """The event is kept in Airflow's database: a bug's huge message is cut, not carried whole."""
    from airflow_provider_cometapi.triggers import prediction as trigger_module

    async def broken(hook, watch):
        raise RuntimeError("x" * 5_000_000)

    monkeypatch.setattr(trigger_module, "await_prediction", broken)
    event = await single_event(PredictionTrigger("p1", poll_interval=0.1))
    assert event["status"] == "error"
    assert len(event["message"]) < trigger_module.UNEXPECTED_ERROR_CHARS + 200
