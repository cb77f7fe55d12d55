"""
CreatePredictionOperator resuming the prediction of an earlier try (Airflow's task state store).

The store is a dict here (the real one is exercised in tests/integration and tests/e2e); the
predictions are real ones on the emulator, so every decision is taken on a real status.
"""

from __future__ import annotations

import time

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_cometapi.emulator.testing import EmulatorProcess
from airflow_provider_cometapi.exceptions import CometAPIError, ServerError
from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
from airflow_provider_cometapi.operators.prediction import CreatePredictionOperator
from airflow_provider_cometapi.resume import RESUME_KEY, request_fingerprint
from tests.fixtures import FAST_RETRIES, set_connection

SCHNELL = "black-forest-labs/flux-schnell"
PROMPT = {"prompt": "a fox"}


class DictStore:
    """The task state store's get/set/delete over a dict shared by every try."""

    def __init__(self) -> None:
        self.data: dict[str, object] = {}

    def get(self, key, default=None):
        return self.data.get(key, default)

    def set(self, key, value):
        self.data[key] = value

    def delete(self, key):
        self.data.pop(key, None)


class TaskInstance:
    def __init__(self, try_number: int = 1, max_tries: int = 1):
        self.try_number = try_number
        self.max_tries = max_tries
        self.pushed: dict[str, object] = {}

    def xcom_push(self, key, value):
        self.pushed[key] = value


@pytest.fixture
def store():
    return DictStore()


def context_for(store, try_number=1, max_tries=1):
    context = {"ti": TaskInstance(try_number, max_tries)}
    if store is not None:
        context["task_state_store"] = store
    return context


def operator(**kwargs) -> CreatePredictionOperator:
    defaults = {"task_id": "generate", "model": SCHNELL, "input": PROMPT, "poll_interval": 0.1}
    return CreatePredictionOperator(**{**defaults, **kwargs})


def record_of(store) -> dict:
    return store.data[RESUME_KEY]


def crashed_try(store, hook, input=PROMPT) -> str:
    """What a first try leaves behind when it dies right after creating its prediction."""
    prediction_id = hook.create_prediction(SCHNELL, input).id
    store.set(RESUME_KEY, {"prediction_id": prediction_id, "request": request_fingerprint(SCHNELL, input)})
    return prediction_id


def test_first_try_records_the_prediction_and_forgets_it_on_success(cometapi_conn, store):
    deferred_context = context_for(store)
    with pytest.raises(TaskDeferred):
        operator(deferrable=True).execute(deferred_context)
    prediction_id = deferred_context["ti"].pushed["prediction_id"]
    assert record_of(store) == {"prediction_id": prediction_id, "request": request_fingerprint(SCHNELL, PROMPT)}

    result = operator(deferrable=False).execute(context_for(store))
    assert result["status"] == "succeeded"
    assert RESUME_KEY not in store.data  # a later clear of the task makes new images


def test_retry_resumes_a_running_prediction_on_the_worker(cometapi_conn, store, hook):
    prediction_id = crashed_try(store, hook)
    context = context_for(store, try_number=2)
    result = operator(deferrable=False).execute(context)
    assert result["id"] == prediction_id == context["ti"].pushed["prediction_id"]
    assert result["status"] == "succeeded"
    assert cometapi_conn.stats(detail=False)["creates"] == 1


def test_retry_defers_on_the_running_prediction(cometapi_conn, store, hook):
    prediction_id = crashed_try(store, hook)
    with pytest.raises(TaskDeferred) as deferred:
        operator(deferrable=True).execute(context_for(store, try_number=2))
    assert deferred.value.trigger.serialize()[1]["prediction_id"] == prediction_id
    assert cometapi_conn.stats(detail=False)["creates"] == 1


def test_retry_returns_a_succeeded_prediction_without_waiting(cometapi_conn, store, hook):
    prediction_id = crashed_try(store, hook)
    time.sleep(0.6)  # the emulator's predictions take 0.5 s
    polls_before = cometapi_conn.stats(detail=False)["polls"]
    result = operator(deferrable=True).execute(context_for(store, try_number=2))
    assert result["id"] == prediction_id
    assert result["status"] == "succeeded"
    stats = cometapi_conn.stats(detail=False)
    assert stats["creates"] == 1
    assert stats["polls"] == polls_before + 1  # the one status check of the resume decision


@pytest.mark.parametrize("outcome", ["failed", "canceled", "aborted"])
def test_retry_creates_afresh_after_an_unsuccessful_prediction(cometapi_conn, store, hook, outcome):
    inputs = {"prompt": "a fox", "_emulator": {"outcome": outcome, "duration": 0.1}}
    old_id = crashed_try(store, hook, input=inputs)
    time.sleep(0.3)
    context = context_for(store, try_number=2)
    op = operator(wait_for_completion=False, input=inputs)
    new = op.execute(context)
    assert new["id"] != old_id
    assert cometapi_conn.stats(detail=False)["creates"] == 2


def test_a_changed_request_is_not_resumed(cometapi_conn, store, hook):
    old_id = crashed_try(store, hook)
    result = operator(wait_for_completion=False, input={"prompt": "a different fox"}).execute(
        context_for(store, try_number=2)
    )
    assert result["id"] != old_id
    assert cometapi_conn.stats(detail=False)["creates"] == 2


def test_a_prediction_the_gateway_forgot_is_replaced(cometapi_conn, store):
    fingerprint = request_fingerprint(SCHNELL, PROMPT)
    store.set(RESUME_KEY, {"prediction_id": "gone0000000000000000000000", "request": fingerprint})
    result = operator(deferrable=False).execute(context_for(store, try_number=2))
    assert result["status"] == "succeeded"
    assert cometapi_conn.stats(detail=False)["creates"] == 1


def test_an_unreachable_gateway_fails_the_try_instead_of_creating_a_duplicate(cometapi_conn, store, hook):
    crashed_try(store, hook)
    cometapi_conn.add_fault(kind="server_error", route="get", status=503, count=-1)
    op = operator(deferrable=False)
    op.hook._retry_policy = FAST_RETRIES
    with pytest.raises(ServerError):
        op.execute(context_for(store, try_number=2))
    assert cometapi_conn.stats(detail=False)["creates"] == 1


def test_durable_false_always_creates(cometapi_conn, store, hook):
    crashed_try(store, hook)
    operator(wait_for_completion=False, durable=False).execute(context_for(store, try_number=2))
    assert cometapi_conn.stats(detail=False)["creates"] == 2


def test_without_a_task_state_store_every_try_creates(cometapi_conn):
    """Airflow before 3.3: the context has no task_state_store."""
    for try_number in (1, 2):
        operator(wait_for_completion=False).execute(context_for(None, try_number=try_number))
    assert cometapi_conn.stats(detail=False)["creates"] == 2


def test_a_broken_wait_leaves_the_prediction_running_when_a_retry_will_resume_it(cometapi_conn, store, hook):
    prediction_id = crashed_try(store, hook)
    error_event = {"status": "error", "prediction_id": prediction_id, "message": "gateway down"}

    with pytest.raises(CometAPIError):
        operator().execute_complete(context_for(store, try_number=1, max_tries=1), error_event)
    assert cometapi_conn.stats(detail=False)["cancels"] == 0

    with pytest.raises(CometAPIError):
        operator().execute_complete(context_for(store, try_number=2, max_tries=1), error_event)
    assert cometapi_conn.stats(detail=False)["cancels"] == 1  # the last try: nobody would resume it


def test_a_succeeded_prediction_whose_files_expired_is_replaced(store, monkeypatch):
    with EmulatorProcess(duration=0.1, extra_args=["--output-ttl", "0.2"]) as emulator:
        set_connection(monkeypatch, emulator.connection_dict())
        old_id = crashed_try(store, CometAPIHook(retry_policy=FAST_RETRIES))
        time.sleep(0.5)
        result = operator(wait_for_completion=False).execute(context_for(store, try_number=2))
        assert result["id"] != old_id
        assert emulator.stats(detail=False)["creates"] == 2
