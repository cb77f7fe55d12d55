"""CreatePredictionOperator called directly (no scheduler), against the emulator."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_cometapi.exceptions import (
    InvalidInputError,
    InvalidParameterError,
    PredictionFailedError,
    PredictionTimeoutError,
    PredictionWaitError,
    UnexpectedEventError,
)
from airflow_provider_cometapi.operators.prediction import CreatePredictionOperator
from airflow_provider_cometapi.polling import MAX_RECORDED_ERROR_CHARS, failure_record
from airflow_provider_cometapi.triggers.prediction import DEFER_TIMEOUT_MARGIN, PredictionTrigger

SCHNELL = "black-forest-labs/flux-schnell"


class RecordingTaskInstance:
    """Stands in for the runtime TI: the only thing the operator asks of it is xcom_push."""

    def __init__(self):
        self.pushed: dict[str, object] = {}

    def xcom_push(self, key, value):
        self.pushed[key] = value


@pytest.fixture
def context():
    return {"ti": RecordingTaskInstance()}


def operator(**kwargs) -> CreatePredictionOperator:
    defaults = {"task_id": "generate", "model": SCHNELL, "input": {"prompt": "a fox"}, "poll_interval": 0.1}
    return CreatePredictionOperator(**{**defaults, **kwargs})


def test_defers_to_the_trigger_with_an_absolute_deadline(cometapi_conn, context):
    op = operator(deferrable=True, timeout=timedelta(minutes=10), cancel_on_kill=False)
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    trigger = deferred.value.trigger
    assert isinstance(trigger, PredictionTrigger)
    _, kwargs = trigger.serialize()
    prediction_id = context["ti"].pushed["prediction_id"]
    assert kwargs["prediction_id"] == prediction_id
    assert kwargs["cometapi_conn_id"] == "cometapi_default"
    assert kwargs["poll_interval"] == 0.1
    assert kwargs["cancel_on_kill"] is False
    assert before + 600 <= kwargs["deadline"] <= time.time() + 600
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout == timedelta(minutes=10) + DEFER_TIMEOUT_MARGIN
    assert cometapi_conn.stats(detail=False)["creates"] == 1
    assert cometapi_conn.stats(detail=False)["polls"] == 0


def test_does_not_defer_when_the_create_answer_is_terminal(cometapi_conn, context):
    op = operator(deferrable=True, prefer_wait=10, input={"prompt": "fast", "_emulator": {"duration": 0.2}})
    result = op.execute(context)
    assert result["status"] == "succeeded"
    assert result["id"] == context["ti"].pushed["prediction_id"]


def test_no_wait_returns_at_once(cometapi_conn, context):
    result = operator(wait_for_completion=False, deferrable=True).execute(context)
    assert result["status"] in ("starting", "processing")
    assert context["ti"].pushed["prediction_id"] == result["id"]


def test_worker_polling_returns_the_final_prediction(cometapi_conn, context):
    result = operator(deferrable=False).execute(context)
    assert result["status"] == "succeeded"
    assert isinstance(result["output"], list)


def test_invalid_input_fails_before_any_request(cometapi_conn, context):
    with pytest.raises(InvalidInputError, match="aspect_ratio"):
        operator(input={"prompt": "x", "aspect_ratio": "2:1"}).execute(context)
    assert cometapi_conn.stats(detail=False)["requests"] == 0
    assert context["ti"].pushed == {}


# --- execute_complete: one test per event branch ------------------------------------------


def test_complete_succeeded_returns_the_event_prediction(cometapi_conn):
    prediction = {"id": "p1", "status": "succeeded", "output": ["http://x/1.webp"]}
    event = {"status": "succeeded", "prediction_id": "p1", "prediction": prediction, "message": "ok"}
    # The connection has no prices: the cost is unknown, never guessed.
    assert operator().execute_complete({}, event) == {**prediction, "cost": None, "currency": "USD"}
    assert cometapi_conn.stats(detail=False)["requests"] == 0  # everything comes from the event


@pytest.mark.parametrize("status", ["failed", "canceled", "aborted"])
def test_complete_unsuccessful_fails_with_the_prediction_error(status, context):
    event = {"status": status, "prediction_id": "p1", "prediction": {}, "message": f"Prediction p1 {status}: NSFW"}
    with pytest.raises(PredictionFailedError, match="NSFW") as info:
        operator().execute_complete(context, event)
    assert info.value.status == status
    assert context["ti"].pushed["failed_prediction"] == {"id": "p1", "status": status, "error": None}


# --- The failed prediction's record, for the Images tab ------------------------------------


def test_a_failed_prediction_leaves_its_error_in_xcom_before_the_task_fails(cometapi_conn, context):
    failing = {"outcome": "failed", "error": "NSFW content detected"}
    model_input = {"prompt": "a forbidden picture", "_emulator": failing}
    with pytest.raises(PredictionFailedError, match="NSFW content detected"):
        operator(input=model_input).execute(context)
    record = context["ti"].pushed["failed_prediction"]
    assert record["id"] == context["ti"].pushed["prediction_id"]
    assert (record["status"], record["error"], record["model"]) == ("failed", "NSFW content detected", SCHNELL)
    assert record["created_at"] and record["completed_at"]
    # Small: nothing from the input, the outputs or the log.
    assert set(record) <= {"id", "status", "error", "model", "created_at", "started_at", "completed_at"}


def test_the_recorded_error_is_bounded_and_the_task_error_is_unchanged(context):
    hostile = "<script>alert(1)</script>" + "x" * 5000
    prediction = {
        "id": "p1",
        "status": "failed",
        "error": hostile,
        "input": {"prompt": "p", "api_key": "sk-secret"},
        "output": ["https://cdn.example/a.webp?sig=secret"],
        "logs": "token sk-secret",
        "model": "m" * 500,
        "created_at": {"not": "a time"},
    }
    message = f"Prediction p1 failed: {hostile[:2000]}"
    event = {"status": "failed", "prediction_id": "p1", "prediction": prediction, "message": message}
    with pytest.raises(PredictionFailedError) as info:
        operator().execute_complete(context, event)
    assert str(info.value) == message  # the task's error is the prediction's, as before
    record = context["ti"].pushed["failed_prediction"]
    assert len(record["error"]) == MAX_RECORDED_ERROR_CHARS and record["error"].endswith("\u2026")
    assert record["error"].startswith("<script>")  # kept as text; the gallery escapes it
    assert len(record["model"]) == 200 and "created_at" not in record
    assert "secret" not in repr(record)


def test_a_failed_xcom_push_does_not_hide_the_prediction_error():
    class BrokenTaskInstance:
        def xcom_push(self, key, value):
            raise RuntimeError("the API server is away")

    event = {"status": "failed", "prediction_id": "p1", "prediction": None, "message": "Prediction p1 failed: NSFW"}
    with pytest.raises(PredictionFailedError, match="NSFW"):
        operator().execute_complete({"ti": BrokenTaskInstance()}, event)


def test_failure_record_without_the_final_prediction():
    assert failure_record("p1", "aborted", None) == {"id": "p1", "status": "aborted", "error": None}


def test_complete_timeout_cancels_and_says_so(cometapi_conn, context):
    op = operator(wait_for_completion=False, input={"prompt": "x", "_emulator": {"outcome": "never"}}, timeout=5)
    prediction_id = op.execute(context)["id"]
    event = {"status": "timeout", "prediction_id": prediction_id, "prediction": None, "message": "late"}
    fresh = operator(timeout=5)  # a resumed task is a fresh object
    with pytest.raises(PredictionTimeoutError, match="and cancelled it"):
        fresh.execute_complete({}, event)
    assert cometapi_conn.stats()["predictions"][prediction_id]["status"] == "canceled"


def test_complete_error_event_fails_with_its_message():
    with pytest.raises(PredictionWaitError, match="gateway down") as info:
        operator().execute_complete({}, {"status": "error", "prediction_id": "p1", "message": "gateway down"})
    assert info.value.prediction_id == "p1"


@pytest.mark.parametrize(
    "event",
    [None, {}, {"status": "weird"}, "succeeded", {"status": "succeeded"}, {"status": "weird", "prediction_id": "p1"}],
)
def test_complete_rejects_missing_or_unknown_events(cometapi_conn, event):
    with pytest.raises(UnexpectedEventError, match="unexpected event"):
        operator().execute_complete({}, event)
    assert cometapi_conn.stats(detail=False)["requests"] == 0  # nothing cancelled on a stranger's word


def test_on_kill_cancels_once(cometapi_conn, context):
    op = operator(wait_for_completion=False, input={"prompt": "x", "_emulator": {"outcome": "never"}})
    op.execute(context)
    op.on_kill()
    op.on_kill()
    assert cometapi_conn.stats(detail=False)["cancels"] == 1


def test_on_kill_before_creation_does_nothing(cometapi_conn):
    operator().on_kill()
    assert cometapi_conn.stats(detail=False)["requests"] == 0


def test_template_fields_and_defaults():
    op = operator()
    assert op.template_fields == ("model", "input")
    assert op.deferrable is False  # [operators] default_deferrable is False unless configured
    assert op.timeout == 3600


def test_inline_outputs_stay_out_of_the_event_and_are_fetched_on_resume(cometapi_conn, context):
    import asyncio

    op = operator(wait_for_completion=False, input={"prompt": "x", "_emulator": {"data_uri": True, "duration": 0.2}})
    prediction_id = op.execute(context)["id"]
    event = asyncio.run(_first_event(PredictionTrigger(prediction_id, poll_interval=0.1)))
    assert event["outputs_shortened"] is True
    assert len(event["prediction"]["output"][0]) < 100
    result = operator().execute_complete({}, event)
    assert result["output"][0].startswith("data:image/webp;base64,")
    assert len(result["output"][0]) > 1000


async def _first_event(trigger):
    async for event in trigger.run():
        return event.payload


def test_timeout_message_says_when_cancel_is_not_supported(monkeypatch, context):
    from airflow_provider_cometapi.emulator import EmulatorProcess
    from tests.fixtures import set_connection

    with EmulatorProcess(extra_args=["--no-cancel"]) as emulator:
        set_connection(monkeypatch, emulator.connection_dict())
        op = operator(wait_for_completion=False, input={"prompt": "x", "_emulator": {"outcome": "never"}})
        prediction_id = op.execute(context)["id"]
        event = {"status": "timeout", "prediction_id": prediction_id, "prediction": None, "message": "late"}
        with pytest.raises(PredictionTimeoutError, match="could not cancel it"):
            operator().execute_complete({}, event)


def test_error_event_cancels_the_prediction(cometapi_conn, context):
    op = operator(wait_for_completion=False, input={"prompt": "x", "_emulator": {"outcome": "never"}})
    prediction_id = op.execute(context)["id"]
    with pytest.raises(PredictionWaitError, match="gateway down"):
        operator().execute_complete({}, {"status": "error", "prediction_id": prediction_id, "message": "gateway down"})
    assert cometapi_conn.stats()["predictions"][prediction_id]["status"] == "canceled"


BAD_WAITING_ARGUMENTS = [
    ("poll_interval", 0),
    ("poll_interval", -1),
    ("poll_interval", float("nan")),
    ("poll_interval", float("inf")),
    ("poll_interval", "5"),
    ("poll_interval", None),
    ("timeout", 0),
    ("timeout", -5),
    ("timeout", timedelta(seconds=-1)),
    ("timeout", timedelta(0)),
    ("timeout", float("nan")),
    ("timeout", float("inf")),
    ("timeout", 1e300),
    ("timeout", True),
    ("timeout", None),
    ("prefer_wait", 0),
    ("prefer_wait", 61),
    ("prefer_wait", 10.5),
    ("prefer_wait", True),
    ("prefer_wait", "10"),
]


@pytest.mark.parametrize(("name", "value"), BAD_WAITING_ARGUMENTS, ids=[f"{n}={v!r}" for n, v in BAD_WAITING_ARGUMENTS])
def test_waiting_arguments_that_cannot_work_fail_at_dag_parse(name, value):
    with pytest.raises(InvalidParameterError, match=f"^{name} must be") as info:
        operator(**{name: value})
    assert isinstance(info.value, ValueError)  # as Airflow's own argument checks raise


@pytest.mark.parametrize(
    ("kwargs", "poll_interval", "timeout", "prefer_wait"),
    [
        ({"poll_interval": timedelta(seconds=2), "timeout": timedelta(minutes=1)}, 2.0, 60.0, None),
        ({"poll_interval": 1, "timeout": 30, "prefer_wait": 60}, 1.0, 30.0, 60),
        ({"prefer_wait": 1}, 0.1, 3600.0, 1),
    ],
)
def test_waiting_arguments_are_kept_as_seconds(kwargs, poll_interval, timeout, prefer_wait):
    op = operator(**kwargs)
    assert (op.poll_interval, op.timeout, op.prefer_wait) == (poll_interval, timeout, prefer_wait)


def test_worker_wait_passes_its_deadline_to_every_poll(cometapi_conn, context, monkeypatch):
    from airflow_provider_cometapi.hooks.cometapi import CometAPIHook

    deadlines = []
    original = CometAPIHook.get_prediction

    def recording(self, prediction_id, *, deadline=None):
        deadlines.append(deadline)
        return original(self, prediction_id, deadline=deadline)

    monkeypatch.setattr(CometAPIHook, "get_prediction", recording)
    before = time.time()
    operator(deferrable=False, timeout=60, input={"prompt": "x", "_emulator": {"duration": 0.3}}).execute(context)
    assert deadlines
    assert all(before + 60 <= deadline <= time.time() + 60 for deadline in deadlines)
    assert len(set(deadlines)) == 1  # one absolute deadline for the whole wait


def test_a_worker_wait_cut_by_its_deadline_times_out_and_cancels(cometapi_conn, context):
    # Every poll answers after the wait's deadline: the deadline cuts it, and the outcome is
    # the timeout (which cancels), not a failed-polling error.
    cometapi_conn.add_fault(kind="slow", route="get", count=-1, delay=5)
    op = operator(
        deferrable=False, timeout=1, poll_interval=0.2, input={"prompt": "x", "_emulator": {"outcome": "never"}}
    )
    started = time.monotonic()
    with pytest.raises(PredictionTimeoutError, match="did not finish before the deadline.*and cancelled it"):
        op.execute(context)
    assert time.monotonic() - started < 3
    assert cometapi_conn.stats(detail=False)["cancels"] == 1
