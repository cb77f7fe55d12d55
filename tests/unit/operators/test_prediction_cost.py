"""
CreatePredictionOperator's cost and budgets against the emulator, whose create count proves what
was (not) created. The task state store is a dict shared by the tries, as in test_prediction_resume.
"""

from __future__ import annotations

import datetime
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred
from airflow.sdk import DAG, Asset

from airflow_provider_cometapi.cost import SPENT_KEY, pending_key
from airflow_provider_cometapi.decorators.prediction import cometapi_task
from airflow_provider_cometapi.exceptions import (
    BudgetExceededError,
    InvalidParameterError,
    InvalidPricesError,
    MissingPriceError,
    PredictionFailedError,
)
from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
from airflow_provider_cometapi.operators.prediction import CreatePredictionOperator
from airflow_provider_cometapi.resume import RESUME_KEY
from tests.fixtures import FAST_RETRIES, set_connection
from tests.unit.operators.test_prediction_resume import DictStore, TaskInstance

SCHNELL = "black-forest-labs/flux-schnell"
PRO = "black-forest-labs/flux-1.1-pro"
PRICES = {SCHNELL: 0.003, PRO: 0.04}


@pytest.fixture
def priced(emulator, monkeypatch):
    """The emulator as the default connection, with prices for two models."""
    set_connection(monkeypatch, {**emulator.connection_dict(), "extra": {"prices": PRICES, "currency": "EUR"}})
    return emulator


@pytest.fixture
def store():
    return DictStore()


def context_for(store=None, try_number=1, **more: Any) -> dict[str, Any]:
    context: dict[str, Any] = {"ti": TaskInstance(try_number, max_tries=2), **more}
    if store is not None:
        context["task_state_store"] = store
    return context


def operator(**kwargs) -> CreatePredictionOperator:
    defaults = {"task_id": "generate", "model": SCHNELL, "input": {"prompt": "a fox"}, "poll_interval": 0.1}
    return CreatePredictionOperator(**{**defaults, **kwargs})


def creates(emulator) -> int:
    return emulator.stats(detail=False)["creates"]


# --- Cost in the result, the log and the asset events ------------------------------------------


def test_the_result_and_the_log_carry_the_cost(priced, capfd):
    result = operator(input={"prompt": "a fox", "num_outputs": 3}).execute(context_for())
    assert len(result["output"]) == 3
    assert (result["cost"], result["currency"]) == (0.009, "EUR")
    closing = next(line for line in capfd.readouterr().out.splitlines() if "succeeded: " in line)
    assert f"Prediction {result['id']} succeeded: 3 images, " in closing
    assert " s predict time, 0.009 EUR. Outputs: " in closing


def test_a_string_output_model_costs_one_image(priced):
    result = operator(model=PRO).execute(context_for())
    assert (result["cost"], result["metrics"]["image_count"]) == (0.04, 1)


def test_without_a_price_the_cost_is_unknown(cometapi_conn, capfd):
    result = operator().execute(context_for())
    assert (result["cost"], result["currency"]) == (None, "USD")
    unknown = "cost unknown (no price for black-forest-labs/flux-schnell in the connection's prices)"
    assert unknown in capfd.readouterr().out


def test_a_deferred_task_gets_its_cost_on_resume(priced):
    with pytest.raises(TaskDeferred):
        operator(deferrable=True).execute(context_for())
    prediction = {"id": "p1", "status": "succeeded", "output": ["http://x/1.webp", "http://x/2.webp"]}
    event = {"status": "succeeded", "prediction_id": "p1", "prediction": prediction, "message": "ok"}
    assert operator().execute_complete({}, event)["cost"] == 0.006


def test_no_wait_has_no_cost_yet(priced):
    result = operator(wait_for_completion=False).execute(context_for())
    assert result["status"] == "starting"
    assert (result["cost"], result["currency"]) == (None, "EUR")


def test_asset_events_carry_the_cost(priced):
    outlet = Asset("cometapi://images/fox")
    events = OutletEvents()
    result = operator(outlets=[outlet]).execute(context_for(outlet_events=events))
    assert events[outlet].extra == {
        "prediction_id": result["id"],
        "model": SCHNELL,
        "images": 1,
        "cost": 0.003,
        "currency": "EUR",
    }


def test_bad_prices_fail_before_any_request(emulator, monkeypatch):
    set_connection(monkeypatch, {**emulator.connection_dict(), "extra": {"prices": '{"flux-schnell": 0.003}'}})
    with pytest.raises(InvalidPricesError, match="'flux-schnell', which is not a model id"):
        operator().execute(context_for())
    assert emulator.stats(detail=False)["requests"] == 0


# --- Budgets: nothing created past them ----------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "says"),
    [({"max_images": 2}, "max_images=2 allows 2 more"), ({"max_cost": 0.01}, "max_cost=0.01 EUR allows 0.01 EUR more")],
)
def test_a_create_over_the_budget_is_refused_before_it_is_sent(priced, store, budget, says):
    op = operator(input={"prompt": "a fox", "num_outputs": 4}, **budget)
    with pytest.raises(BudgetExceededError, match=says) as info:
        op.execute(context_for(store))
    assert "may make 4 images (0.012 EUR)" in str(info.value)
    assert isinstance(info.value, AirflowFailException)  # a retry would be refused the same way
    assert creates(priced) == 0
    assert store.data == {}


def test_max_cost_without_a_price_fails_before_any_request(priced, store):
    with pytest.raises(MissingPriceError, match="needs the price of one image of black-forest-labs/flux-dev"):
        operator(model="black-forest-labs/flux-dev", max_cost=1).execute(context_for(store))
    assert priced.stats(detail=False)["requests"] == 0


def test_max_cost_without_any_prices_fails_before_any_request(cometapi_conn):
    with pytest.raises(MissingPriceError, match=r"priced: none"):
        operator(max_cost=1).execute(context_for())
    assert cometapi_conn.stats(detail=False)["requests"] == 0


def test_max_images_needs_no_price(cometapi_conn, store):
    result = operator(input={"prompt": "a fox", "num_outputs": 2}, max_images=2).execute(context_for(store))
    assert len(result["output"]) == 2
    assert creates(cometapi_conn) == 1


def test_a_task_within_its_budget_runs_and_forgets_its_ledger(priced, store):
    result = operator(input={"prompt": "a fox", "num_outputs": 2}, max_images=2, max_cost=0.006).execute(
        context_for(store)
    )
    assert result["cost"] == 0.006
    assert creates(priced) == 1
    assert SPENT_KEY not in store.data  # a clear of the succeeded task starts a new budget


@pytest.mark.parametrize(("name", "value"), [("max_images", 0), ("max_images", 1.5), ("max_cost", -1)])
def test_budgets_that_cannot_work_fail_at_dag_parse(name, value):
    with pytest.raises(InvalidParameterError, match=name):
        operator(**{name: value})


# --- Retries count what earlier tries spent -------------------------------------------------


def test_a_retry_counts_the_images_an_earlier_try_made(priced, store):
    hook = CometAPIHook(retry_policy=FAST_RETRIES)
    first = operator(input={"prompt": "a fox", "num_outputs": 2}, max_images=3, wait_for_completion=False)
    first_id = first.execute(context_for(store))["id"]
    # The first try died while waiting (its ledger and resume records stay); the DAG's input
    # changed since, so the retry would create afresh.
    store.data[RESUME_KEY] = {**store.data.get(RESUME_KEY, {}), "prediction_id": first_id, "request": "other"}
    store.data[SPENT_KEY] = {"v": 1, "predictions": {first_id: {"images": 2, "cost": 0.006, "ended": False}}}
    while not hook.get_prediction(first_id).is_terminal:
        pass
    retry = operator(input={"prompt": "a fox, again", "num_outputs": 2}, max_images=3)
    with pytest.raises(BudgetExceededError, match=r"Earlier tries of this task already made 2 images \(0.006 EUR\)"):
        retry.execute(context_for(store, try_number=2))
    assert creates(priced) == 1  # only the first try's
    hook.close()


def test_a_retry_after_a_failed_prediction_has_its_whole_budget(priced, store):
    failing = {"prompt": "a fox", "_emulator": {"outcome": "failed"}}
    with pytest.raises(PredictionFailedError):
        operator(input=failing, max_images=1).execute(context_for(store))
    (record,) = store.data[SPENT_KEY]["predictions"].values()
    assert (record["images"], record["ended"]) == (0, True)
    # The retry creates again (and fails again, as its input says): not refused by the budget.
    with pytest.raises(PredictionFailedError):
        operator(input=failing, max_images=1).execute(context_for(store, try_number=2))
    assert creates(priced) == 2


def test_a_create_that_may_have_reached_the_gateway_counts_in_full(priced, store):
    # A first try died after sending its create, before learning the prediction's id.
    store.data[SPENT_KEY] = {"v": 1, "predictions": {pending_key(1): {"images": 1, "cost": 0.003, "ended": False}}}
    with pytest.raises(BudgetExceededError, match="max_images=1 allows 0 more"):
        operator(max_images=1).execute(context_for(store, try_number=2))
    assert creates(priced) == 0


def test_a_create_refused_by_the_gateway_counts_nothing(priced, store):
    priced.add_fault(kind="error", route="create", status=422, count=1)
    with pytest.raises(Exception, match="422"):
        operator(max_images=1).execute(context_for(store))
    assert store.data.get(SPENT_KEY, {"predictions": {}})["predictions"] == {}
    operator(max_images=1).execute(context_for(store, try_number=2))
    assert creates(priced) == 1


def test_a_resumed_prediction_is_not_paid_again(priced, store):
    first = context_for(store)
    with pytest.raises(TaskDeferred):
        operator(max_images=1, deferrable=True).execute(first)
    # The deferred first try was lost; the retry resumes the same prediction: nothing new to pay.
    result = operator(max_images=1).execute(context_for(store, try_number=2))
    assert result["id"] == first["ti"].pushed["prediction_id"]
    assert creates(priced) == 1


# --- @task.cometapi -------------------------------------------------------------------------

START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


@pytest.mark.parametrize(("name", "value"), [("max_images", 0), ("max_cost", float("nan"))])
def test_the_decorator_checks_budgets_when_applied(name, value):
    with pytest.raises(InvalidParameterError, match=name):
        cometapi_task(model=SCHNELL, **{name: value})


def test_the_decorator_keeps_the_budget_and_reports_the_cost(priced, store):
    with DAG("unit_decorator_cost", schedule=None, start_date=START):
        generate = cometapi_task(model=SCHNELL, task_id="generate", max_images=2, poll_interval=0.1)(
            lambda n: {"prompt": "a fox", "num_outputs": n}
        )
        over, within = generate(3).operator, generate(2).operator
    with pytest.raises(BudgetExceededError, match="max_images=2 allows 2 more"):
        over.execute(context_for(store))
    assert creates(priced) == 0
    result = within.execute(context_for(store))
    assert (result["cost"], result["currency"]) == (0.006, "EUR")
    assert creates(priced) == 1


# --- cancel_after ---------------------------------------------------------------------------


def sent_headers(monkeypatch) -> list[dict[str, str]]:
    """The headers of every create the hook sends, recorded on the way to the emulator."""
    import requests

    sent: list[dict[str, str]] = []
    send = requests.Session.request

    def recording(self, method, url, **kwargs):
        if method == "POST" and url.endswith("/predictions"):
            sent.append(dict(kwargs.get("headers") or {}))
        return send(self, method, url, **kwargs)

    monkeypatch.setattr(requests.Session, "request", recording)
    return sent


def test_cancel_after_is_off_unless_asked_for(cometapi_conn, monkeypatch):
    sent = sent_headers(monkeypatch)
    operator(wait_for_completion=False).execute(context_for())
    operator(wait_for_completion=False, cancel_after=datetime.timedelta(minutes=2)).execute(context_for())
    operator(wait_for_completion=False, cancel_after=4.2, prefer_wait=1).execute(context_for())
    assert ["Cancel-After" in headers for headers in sent] == [False, True, True]
    assert (sent[1]["Cancel-After"], sent[2]["Cancel-After"]) == ("120s", "5s")


@pytest.mark.parametrize("value", [0, -5, float("nan"), "10s"])
def test_cancel_after_that_cannot_work_fails_at_dag_parse(value):
    with pytest.raises(InvalidParameterError, match="cancel_after"):
        operator(cancel_after=value)
    with pytest.raises(InvalidParameterError, match="cancel_after"):
        cometapi_task(model=SCHNELL, cancel_after=value)


class OutletEvents(dict):
    """``context["outlet_events"]``: an event per asset, keyed by its URI (Airflow 3.1's Asset is unhashable)."""

    def __getitem__(self, asset):
        return self.setdefault(asset.uri, SimpleNamespace(extra={}))
