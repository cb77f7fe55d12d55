"""cost.py: prices, image counts, cost arithmetic and the budget counter, without any I/O."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from airflow_provider_cometapi.cost import (
    SPENT_KEY,
    Budget,
    BudgetCounter,
    Prices,
    Spend,
    SpendLedger,
    cost_of,
    format_amount,
    image_count,
    pending_key,
    planned_images,
    summary,
    total_cost,
)
from airflow_provider_cometapi.exceptions import (
    BudgetExceededError,
    InvalidParameterError,
    InvalidPricesError,
    MissingPriceError,
)
from airflow_provider_cometapi.models import Prediction

SCHNELL = "black-forest-labs/flux-schnell"
PRO = "black-forest-labs/flux-1.1-pro"
PRICES = Prices.from_extra({SCHNELL: 0.003, PRO: 0.04})


def prediction(status="succeeded", output=None, metrics=None, model=SCHNELL) -> dict:
    body = {"id": "p1", "status": status, "model": model, "output": output}
    if metrics is not None:
        body["metrics"] = metrics
    return body


# --- Prices ---------------------------------------------------------------------------------


def test_prices_from_an_object_or_its_json_text_are_the_same():
    text = json.dumps({SCHNELL: 0.003, PRO: 0.04})
    assert Prices.from_extra(text) == PRICES
    assert PRICES.price_of(SCHNELL) == Decimal("0.003")
    assert PRICES.currency == "USD"


def test_no_prices_means_every_cost_is_unknown():
    for empty in (None, "", "  ", {}):
        prices = Prices.from_extra(empty)
        assert not prices
        assert prices.cost(SCHNELL, 1) is None


def test_a_version_in_the_model_asked_for_uses_the_models_price():
    assert PRICES.price_of(f"{SCHNELL}:abc123") == Decimal("0.003")
    assert PRICES.price_of("black-forest-labs/flux-dev") is None
    assert PRICES.price_of(None) is None
    assert PRICES.price_of("not a model") is None


@pytest.mark.parametrize(
    ("prices", "says"),
    [
        ("{not json", "is not valid JSON"),
        ('{"a/b": 1, "a/b": 2}', "names 'a/b' twice"),
        ("[0.003]", "must be a JSON object, got list"),
        (0.003, "must be a JSON object, got float"),
        ({"flux-schnell": 0.003}, "'flux-schnell', which is not a model id"),
        ({f"{SCHNELL}:v1": 0.003}, "without ':version'"),
        ({f" {SCHNELL}": 0.003}, "is not a model id"),
        ({SCHNELL: -0.01}, "must be a finite number >= 0"),
        ({SCHNELL: float("nan")}, "got NaN"),
        ('{"a/b": NaN}', "got NaN"),
        ({SCHNELL: float("inf")}, "got Infinity"),
        ({SCHNELL: "0.003"}, 'got "0.003"'),
        ({SCHNELL: True}, "got true"),
        ({SCHNELL: None}, "got null"),
    ],
)
def test_bad_prices_say_what_and_how_to_fix(prices, says):
    with pytest.raises(InvalidPricesError, match="extra field 'prices' of connection 'c'") as info:
        Prices.from_extra(prices, conn_id="c")
    assert says in str(info.value)
    assert "for example" in str(info.value).lower() or "Keep one price" in str(info.value)


@pytest.mark.parametrize(("currency", "read"), [(None, "USD"), ("", "USD"), ("EUR", "EUR"), (" credits ", "credits")])
def test_currency(currency, read):
    assert Prices.from_extra({SCHNELL: 1}, currency).currency == read


@pytest.mark.parametrize("currency", [1, "US dollars", "€", "x" * 17, ["USD"]])
def test_a_bad_currency_is_refused(currency):
    with pytest.raises(InvalidPricesError, match="extra field 'currency'.*short currency code"):
        Prices.from_extra({SCHNELL: 1}, currency)


# --- Images and cost ------------------------------------------------------------------------


def test_image_count_prefers_the_gateways_metric():
    assert image_count(prediction(output=["a", "b"], metrics={"image_count": 4})) == 4
    assert image_count(prediction(output=["a", "b"], metrics={"image_count": 0})) == 0
    assert image_count(prediction(output=["a", "b"], metrics={"image_count": 3.0})) == 3


@pytest.mark.parametrize("metric", [None, -1, 1.5, "2", True, float("nan"), 10**18, float("inf")])
def test_image_count_counts_the_outputs_without_a_usable_metric(metric):
    assert image_count(prediction(output=["a", "b"], metrics={"image_count": metric})) == 2


@pytest.mark.parametrize(("output", "count"), [(["a", "b", "c"], 3), ("https://x/one.webp", 1), (None, 0), ([], 0)])
def test_image_count_of_list_and_string_outputs(output, count):
    assert image_count(prediction(output=output)) == count
    assert image_count(Prediction.from_api(prediction(output=output))) == count


def test_cost_of_list_and_string_outputs():
    assert cost_of(prediction(output=["a", "b", "c"]), PRICES) == 0.009  # exact, not 0.009000000000000001
    assert cost_of(prediction(output="https://x/one.webp", model=PRO), PRICES) == 0.04
    assert cost_of(Prediction.from_api(prediction(output=["a"], metrics={"image_count": 2})), PRICES) == 0.006


def test_the_model_asked_for_decides_the_price():
    assert cost_of(prediction(output=["a"], model=None), PRICES, model=PRO) == 0.04


def test_unknown_costs_are_none_never_guessed():
    assert cost_of(prediction(output=["a"], model="someone/else"), PRICES) is None
    assert cost_of(prediction(output=["a"]), Prices()) is None
    assert cost_of(prediction(status="processing", output=["a"]), PRICES) is None  # not all made yet


def test_a_failed_prediction_without_images_costs_nothing():
    assert cost_of(prediction(status="failed"), PRICES) == 0.0


def test_total_cost_is_unknown_if_any_part_is():
    assert total_cost([0.1, 0.2]) == 0.3
    assert total_cost([]) == 0.0
    assert total_cost([0.1, None]) is None


@pytest.mark.parametrize(
    ("model_input", "images"),
    [({}, 1), ({"num_outputs": 4}, 4), ({"num_outputs": "2"}, 2), ({"num_outputs": 0}, 1), ({"num_outputs": True}, 1)],
)
def test_planned_images(model_input, images):
    assert planned_images({"prompt": "x", **model_input}) == images


def test_summary_is_the_closing_log_line():
    done = prediction(output=["a"], metrics={"predict_time": 1.84, "image_count": 1})
    assert summary(done, PRICES) == "1 image, 1.8 s predict time, 0.003 USD"
    assert summary(prediction(output=["a", "b"]), Prices()) == (
        f"2 images, cost unknown (no price for {SCHNELL} in the connection's prices)"
    )


@pytest.mark.parametrize(
    ("amount", "text"), [(0.003, "0.003"), (1.2, "1.2"), (10.0, "10"), (Decimal("0.0100"), "0.01")]
)
def test_format_amount(amount, text):
    assert format_amount(amount) == text


# --- Budgets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"max_images": 0}, "max_images must be a whole number >= 1"),
        ({"max_images": 2.5}, "max_images must be"),
        ({"max_images": True}, "max_images must be"),
        ({"max_images": "10"}, "max_images must be"),
        ({"max_cost": -1}, "max_cost must be a finite number >= 0"),
        ({"max_cost": float("nan")}, "max_cost must be"),
        ({"max_cost": float("inf")}, "max_cost must be"),
        ({"max_cost": "5"}, "max_cost must be"),
    ],
)
def test_budgets_that_cannot_work_are_refused(kwargs, says):
    with pytest.raises(InvalidParameterError, match=says):
        Budget.of(**kwargs)


def test_no_budget():
    assert not Budget.of()
    assert Budget.of(max_cost=0)


def test_max_cost_needs_the_models_price():
    Budget.of(max_cost=1).require_price(SCHNELL, PRICES)
    Budget.of(max_images=1).require_price("someone/else", Prices())  # images need no price
    with pytest.raises(MissingPriceError, match=r"max_cost=1 needs the price of one image of someone/else.*priced: "):
        Budget.of(max_cost=1).require_price("someone/else:v2", PRICES, conn_id="c")


def counter(**budget) -> BudgetCounter:
    return BudgetCounter(Budget.of(**budget), PRICES, SCHNELL)


def test_the_counter_reserves_what_fits_and_refuses_the_rest():
    images = counter(max_images=5)
    assert images.reserve(4)
    assert not images.reserve(2)
    assert images.spent.images == 4
    assert images.reserve(1)
    assert not images.fits(1)


def test_max_cost_counts_in_exact_decimals():
    cost = counter(max_cost=0.009)
    assert cost.reserve(3)  # 3 x 0.003 = 0.009 exactly: within the budget
    assert not cost.reserve(1)
    assert cost.spent == Spend(3, Decimal("0.009"))


def test_settling_replaces_the_reservation_by_what_was_made():
    images = counter(max_images=4)
    assert images.reserve(4)
    made = images.settle(4, prediction(status="failed"))
    assert made == Spend(0, Decimal(0))
    assert images.reserve(4)  # the failed prediction made nothing, the budget is whole again
    images.release(4)
    assert images.spent.images == 0


def test_require_fails_saying_what_and_what_was_spent():
    images = BudgetCounter(Budget.of(max_images=4), PRICES, SCHNELL, spent=Spend.of(3, 0.009))
    with pytest.raises(BudgetExceededError) as info:
        images.require(2)
    message = str(info.value)
    assert "may make 2 images (0.006 USD) with black-forest-labs/flux-schnell" in message
    assert "max_images=4 allows 1 more" in message
    assert "Earlier tries of this task already made 3 images (0.009 USD)" in message
    assert "Nothing was created" in message
    assert info.value.images == 2
    assert info.value.spent.images == 3


def test_require_names_max_cost_when_that_is_the_limit():
    with pytest.raises(BudgetExceededError, match=r"max_cost=0.005 USD allows 0.005 USD more"):
        counter(max_cost=0.005).require(2)


# --- The ledger -----------------------------------------------------------------------------


class DictStore(dict):
    def set(self, key, value):
        self[key] = json.loads(json.dumps(value))  # what a real store keeps: JSON

    def delete(self, key):
        self.pop(key, None)


def test_the_ledger_sums_every_try_and_forgets():
    store = DictStore()
    ledger = SpendLedger(store)
    ledger.record(pending_key(1), Spend.of(4, 0.012), ended=False)
    ledger.record("pred1", Spend.of(4, 0.012), ended=False, replacing=pending_key(1))
    ledger.record(pending_key(2), Spend.of(2, 0.006), ended=False)
    assert set(store[SPENT_KEY]["predictions"]) == {"pred1", "pending-2"}
    assert SpendLedger(store).spent() == Spend(6, Decimal("0.018"))
    assert SpendLedger(store).spent(excluding="pred1") == Spend(2, Decimal("0.006"))
    ledger.drop(pending_key(2))
    assert SpendLedger(store).spent() == Spend(4, Decimal("0.012"))
    ledger.forget()
    assert SPENT_KEY not in store


def test_refresh_records_how_earlier_predictions_ended():
    store = DictStore()
    ledger = SpendLedger(store)
    ledger.record("failed1", Spend.of(4, 0.012), ended=False)
    ledger.record("running1", Spend.of(1, 0.003), ended=False)
    ledger.record("gone1", Spend.of(1, 0.003), ended=False)
    ledger.record(pending_key(1), Spend.of(1, 0.003), ended=False)
    answers = {
        "failed1": Prediction.from_api({"id": "failed1", "status": "failed"}),
        "running1": Prediction.from_api({"id": "running1", "status": "processing"}),
        "gone1": None,
    }
    asked = []
    ledger.refresh(lambda pid: asked.append(pid) or answers[pid], PRICES, SCHNELL)
    assert sorted(asked) == ["failed1", "gone1", "running1"]  # never a pending record
    # The failed one made nothing; the others count in full.
    assert ledger.spent() == Spend(3, Decimal("0.009"))


def test_without_a_store_every_try_starts_from_nothing():
    ledger = SpendLedger(None)
    ledger.record("p", Spend.of(1, 1), ended=True)
    assert ledger.spent() == Spend()
    ledger.forget()


def test_an_unreadable_ledger_counts_nothing_rather_than_crashing():
    assert SpendLedger(DictStore({SPENT_KEY: "garbage"})).spent() == Spend()
    store = DictStore({SPENT_KEY: {"predictions": {"p": {"images": "x", "cost": None}}}})
    assert SpendLedger(store).spent() == Spend(0, None)
