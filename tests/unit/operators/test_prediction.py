"""CreatePredictionOperator called directly (no scheduler), against the emulator."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_cometapi.exceptions import (
    CometAPIError,
    InvalidInputError,
    PredictionFailedError,
    PredictionTimeoutError,
)
from airflow_provider_cometapi.operators.prediction import DEFER_TIMEOUT_MARGIN, CreatePredictionOperator
from airflow_provider_cometapi.triggers.prediction import PredictionTrigger

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
    assert operator().execute_complete({}, event) == prediction
    assert cometapi_conn.stats(detail=False)["requests"] == 0  # everything comes from the event


@pytest.mark.parametrize("status", ["failed", "canceled", "aborted"])
def test_complete_unsuccessful_fails_with_the_prediction_error(status):
    event = {"status": status, "prediction_id": "p1", "prediction": {}, "message": f"Prediction p1 {status}: NSFW"}
    with pytest.raises(PredictionFailedError, match="NSFW") as info:
        operator().execute_complete({}, event)
    assert info.value.status == status


def test_complete_timeout_cancels_and_says_so(cometapi_conn, context):
    op = operator(wait_for_completion=False, input={"prompt": "x", "_emulator": {"outcome": "never"}}, timeout=5)
    prediction_id = op.execute(context)["id"]
    event = {"status": "timeout", "prediction_id": prediction_id, "prediction": None, "message": "late"}
    fresh = operator(timeout=5)  # a resumed task is a fresh object
    with pytest.raises(PredictionTimeoutError, match="and cancelled it"):
        fresh.execute_complete({}, event)
    assert cometapi_conn.stats()["predictions"][prediction_id]["status"] == "canceled"


def test_complete_error_event_fails_with_its_message():
    with pytest.raises(CometAPIError, match="gateway down"):
        operator().execute_complete({}, {"status": "error", "prediction_id": "p1", "message": "gateway down"})


@pytest.mark.parametrize("event", [None, {}, {"status": "weird"}, "succeeded", {"status": "succeeded"}])
def test_complete_rejects_missing_or_unknown_events(event):
    with pytest.raises(CometAPIError):
        operator().execute_complete({}, event)


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
    with pytest.raises(CometAPIError, match="gateway down"):
        operator().execute_complete({}, {"status": "error", "prediction_id": prediction_id, "message": "gateway down"})
    assert cometapi_conn.stats()["predictions"][prediction_id]["status"] == "canceled"


@pytest.mark.parametrize("interval", [0, -1])
def test_poll_interval_must_be_positive(interval):
    with pytest.raises(ValueError, match="poll_interval"):
        operator(poll_interval=interval)
