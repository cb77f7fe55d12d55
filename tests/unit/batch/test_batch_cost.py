"""The batch's cost and budgets against the emulator: lines' cost, totals, creates stopped at the budget, retries."""

from __future__ import annotations

import json

import pytest

from airflow_provider_cometapi.batch.manifest import ManifestEntry
from airflow_provider_cometapi.exceptions import BudgetExceededError, InvalidParameterError, MissingPriceError
from tests.fixtures import set_connection
from tests.unit.batch.test_operator import MODEL, context, inputs, lines, operator, run_deferred


@pytest.fixture
def priced(cometapi_conn, monkeypatch):
    extra = {"prices": json.dumps({MODEL: 0.003}), "currency": "EUR"}
    set_connection(monkeypatch, {**cometapi_conn.connection_dict(), "extra": extra})
    return cometapi_conn


def manifest_at(tmp_path):
    return sorted(tmp_path.glob("*.manifest.jsonl"))[0]


def test_lines_and_totals_carry_the_cost(tmp_path, priced):
    batch = [*inputs(3), {**inputs(1)[0], "prompt": "two", "num_outputs": 2}]
    result = operator(tmp_path, batch, deferrable=False).execute(context())
    assert (result["images"], result["cost"], result["currency"], result["skipped"]) == (5, 0.015, "EUR", 0)
    assert [(line["images"], line["cost"]) for line in lines(result)] == [(1, 0.003)] * 3 + [(2, 0.006)]
    sidecars = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert sorted(sidecar["cost"] for sidecar in sidecars) == [0.003, 0.003, 0.003, 0.006]


def test_without_a_price_the_cost_is_unknown(tmp_path, cometapi_conn):
    result = operator(tmp_path, inputs(2), deferrable=False).execute(context())
    assert (result["images"], result["cost"], result["currency"]) == (2, None, "USD")
    assert [(line["images"], line["cost"]) for line in lines(result)] == [(1, None)] * 2


@pytest.mark.parametrize("deferrable", [False, True])
def test_creates_stop_at_the_budget_and_the_rest_is_skipped(tmp_path, priced, deferrable):
    make = lambda: operator(tmp_path, inputs(10), max_in_flight=3, deferrable=deferrable, max_images=4)  # noqa: E731
    with pytest.raises(BudgetExceededError, match=r"6 of 10 inputs were not created") as raised:
        run_deferred(make)
    assert priced.stats()["creates"] == 4
    assert "max_images=4" in str(raised.value) and "4 images (0.012 EUR)" in str(raised.value)
    manifest = [json.loads(line) for line in manifest_at(tmp_path).read_text().splitlines()]
    assert [line["status"] for line in manifest] == ["succeeded"] * 4 + ["skipped"] * 6
    assert all("budget" in line["error"] for line in manifest[4:])
    assert len(list(tmp_path.glob("*.webp"))) == 4  # what it started was stored


def test_max_cost_counts_planned_images(tmp_path, priced):
    batch = [{**item, "num_outputs": 2} for item in inputs(5)]
    with pytest.raises(BudgetExceededError, match=r"3 of 5 inputs"):
        operator(tmp_path, batch, deferrable=False, max_cost=0.013).execute(context())
    assert priced.stats()["creates"] == 2  # 2 x 2 images x 0.003 = 0.012; a third would be 0.018


def test_a_retry_counts_what_earlier_tries_made(tmp_path, priced):
    with pytest.raises(BudgetExceededError):
        operator(tmp_path, inputs(6), deferrable=False, max_images=2).execute(context())
    assert priced.stats()["creates"] == 2
    # The same budget again: nothing more is created; a larger one creates only what is left.
    with pytest.raises(BudgetExceededError, match="4 of 6"):
        operator(tmp_path, inputs(6), deferrable=False, max_images=2).execute(context())
    assert priced.stats()["creates"] == 2
    with pytest.raises(BudgetExceededError, match="2 of 6"):
        operator(tmp_path, inputs(6), deferrable=False, max_images=4).execute(context())
    assert priced.stats()["creates"] == 4
    result = operator(tmp_path, inputs(6), deferrable=False, max_images=6).execute(context())
    assert priced.stats()["creates"] == 6
    assert (result["succeeded"], result["skipped"], result["images"], result["cost"]) == (6, 0, 6, 0.018)


def test_budget_checked_at_parse_and_before_any_create(tmp_path, cometapi_conn):
    with pytest.raises(InvalidParameterError, match="max_images"):
        operator(tmp_path, inputs(1), max_images=0)
    with pytest.raises(InvalidParameterError, match="max_cost"):
        operator(tmp_path, inputs(1), max_cost=-1)
    with pytest.raises(MissingPriceError, match="Nothing was created"):
        operator(tmp_path, inputs(2), deferrable=False, max_cost=1).execute(context())
    assert cometapi_conn.stats()["creates"] == 0


def test_old_lines_without_cost_still_read():
    line = {
        "v": 1, "index": 0, "line": None, "input": {"prompt": "a"}, "fingerprint": "0" * 64,
        "prediction_id": "abc", "status": "succeeded", "error": None, "outputs": [], "stored": [],
        "attempts": 1, "previous_ids": [], "cancelled": False,
    }  # fmt: skip
    entry = ManifestEntry.from_json(line, where="line 1")
    assert (entry.images, entry.cost) == (None, None)
    assert ManifestEntry.from_json(entry.to_json(), where="x") == entry
    skipped = {**line, "prediction_id": None, "status": "skipped", "images": None, "cost": None}
    assert ManifestEntry.from_json(skipped, where="line 1").status == "skipped"


def test_a_succeeded_line_stored_again_is_not_counted_twice(tmp_path, priced):
    operator(tmp_path, inputs(2), deferrable=False).execute(context())
    manifest = manifest_at(tmp_path)
    edited = [json.loads(line) for line in manifest.read_text().splitlines()]
    edited[0]["stored"] = None  # as if the try died before storing it
    manifest.write_text("".join(json.dumps(line) + "\n" for line in edited))
    result = operator(tmp_path, inputs(2), deferrable=False, max_images=2).execute(context())
    assert (result["images"], result["cost"], priced.stats()["creates"]) == (2, 0.006, 2)
    assert [line["images"] for line in lines(result)] == [1, 1] and lines(result)[0]["stored"]
