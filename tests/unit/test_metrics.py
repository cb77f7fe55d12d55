"""The provider's metrics (airflow_provider_cometapi.metrics): what each event sends, and when."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from airflow_provider_cometapi import metrics
from airflow_provider_cometapi.models import Prediction
from airflow_provider_cometapi.triggers.prediction import PredictionTrigger

SCHNELL = "black-forest-labs/flux-schnell"


class Recorder:
    """Stands in for Airflow's ``Stats``: every call, as (kind, name, value, tags)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, dict]] = []

    def incr(self, stat, count=1, rate=1, *, tags=None):
        self.calls.append(("incr", stat, count, tags or {}))

    def timing(self, stat, dt, *, tags=None):
        seconds = dt.total_seconds() if isinstance(dt, timedelta) else dt / 1000
        self.calls.append(("timing", stat, seconds, tags or {}))

    def gauge(self, stat, value, rate=1, delta=False, *, tags=None):
        self.calls.append(("gauge", stat, value, tags or {}))

    def named(self, name: str) -> list[tuple[str, str, float, dict]]:
        return [call for call in self.calls if call[1] == name]


@pytest.fixture
def stats():
    metrics.reset_for_tests()
    recorder = Recorder()
    metrics._metrics()._stats = recorder
    yield recorder
    metrics.reset_for_tests()


def prediction(status: str = "succeeded", **raw) -> Prediction:
    data = {
        "id": "p1",
        "status": status,
        "model": SCHNELL,
        "output": ["https://example.com/a.webp", "https://example.com/b.webp"] if status == "succeeded" else None,
        **raw,
    }
    return Prediction.from_api(data)


def test_an_end_outside_an_event_loop_is_sent_at_once(stats):
    metrics.prediction_ended(prediction(metrics={"predict_time": 1.5}), 4.0, cost=0.006, currency="USD")
    model = {"model": SCHNELL}
    assert stats.calls == [
        ("incr", "cometapi.predictions.succeeded", 1, model),
        ("incr", "cometapi.images", 2, model),
        ("incr", "cometapi.cost", 0.006, {**model, "currency": "USD"}),
        ("timing", "cometapi.predict_time", 1.5, model),
        ("timing", "cometapi.wait", 4.0, model),
    ]


@pytest.mark.parametrize("status", ["failed", "canceled", "aborted"])
def test_unsuccessful_ends_count_by_status_with_no_images(stats, status):
    metrics.prediction_ended(prediction(status, error="boom"))
    assert [call[1] for call in stats.calls] == [f"cometapi.predictions.{status}"]


def test_a_prediction_not_ended_sends_nothing(stats):
    metrics.prediction_ended(prediction("processing"), 1.0)
    assert stats.calls == []


def test_the_gateways_image_count_wins_over_the_outputs(stats):
    metrics.prediction_ended(prediction(metrics={"image_count": 4}))
    assert stats.named("cometapi.images")[-1][2] == 4
    metrics.prediction_ended(prediction(), images=7)
    assert stats.named("cometapi.images")[-1][2] == 7


def test_created_is_tagged_by_model_without_version_and_returns_the_prediction(stats):
    created = prediction("starting")
    assert metrics.created(f"{SCHNELL}:abc123", created) is created
    metrics.prediction_created(None)
    metrics.prediction_created("own er/na,me")
    assert [call[3]["model"] for call in stats.named("cometapi.predictions.created")] == [
        SCHNELL,
        "unknown",
        "own_er/na_me",
    ]


def test_a_wait_that_ends_without_an_end(stats):
    metrics.wait_ended_without_end("timeout", SCHNELL, 3.0)
    metrics.wait_ended_without_end("error")
    metrics.wait_ended_without_end("succeeded")  # not a wait's own outcome: nothing
    assert [call[:3] for call in stats.calls] == [
        ("incr", "cometapi.waits.timeout", 1),
        ("timing", "cometapi.wait", 3.0),
        ("incr", "cometapi.waits.error", 1),
    ]


async def test_in_an_event_loop_waits_are_summed_and_sent_when_the_last_one_ends(stats):
    for _ in range(3):
        metrics.wait_started()
    for _ in range(metrics.TIMER_SAMPLES + 10):
        metrics.prediction_ended(prediction(metrics={"predict_time": 1.0}), 2.0)
    metrics.wait_finished()
    metrics.wait_finished()
    assert stats.calls == []  # one still in flight: nothing sent yet
    metrics.wait_finished()
    ended = metrics.TIMER_SAMPLES + 10
    assert stats.named("cometapi.predictions.succeeded") == [
        ("incr", "cometapi.predictions.succeeded", ended, {"model": SCHNELL})
    ]
    assert stats.named("cometapi.images")[0][2] == 2 * ended
    assert len(stats.named("cometapi.predict_time")) == metrics.TIMER_SAMPLES
    assert len(stats.named("cometapi.wait")) == metrics.TIMER_SAMPLES
    gauge = stats.named("cometapi.predictions.in_flight")
    assert len(gauge) == 1
    assert gauge[0][2] == 0
    assert "hostname" in gauge[0][3]


async def test_in_an_event_loop_the_sums_go_out_every_flush(stats, monkeypatch):
    monkeypatch.setattr(metrics, "FLUSH_SECONDS", 0.05)
    metrics.wait_started()
    metrics.wait_started()
    metrics.prediction_ended(prediction())
    await asyncio.sleep(0.2)
    assert [call[1] for call in stats.calls[:3]] == [
        "cometapi.predictions.succeeded",
        "cometapi.images",
        "cometapi.predictions.in_flight",
    ]
    assert stats.named("cometapi.predictions.in_flight")[0][2] == 2
    # While waits are in flight the gauge goes on being reported, with nothing else new.
    await asyncio.sleep(0.1)
    assert len(stats.named("cometapi.predictions.in_flight")) >= 2
    assert len(stats.named("cometapi.predictions.succeeded")) == 1
    metrics.wait_finished()
    metrics.wait_finished()


def test_a_failure_to_send_never_raises(stats, caplog):
    class Broken:
        def incr(self, *args, **kwargs):
            raise RuntimeError("no statsd")

    metrics._metrics()._stats = Broken()
    metrics.prediction_created(SCHNELL)
    metrics.prediction_created(SCHNELL)
    assert sum("Could not send CometAPI metrics" in record.getMessage() for record in caplog.records) == 1


def test_airflows_stats_is_what_is_used():
    from airflow.providers.common.compat.sdk import Stats

    metrics.reset_for_tests()
    metrics.prediction_created(SCHNELL)  # with metrics off in tests: Airflow's no-op logger
    assert metrics._metrics()._stats is Stats


async def test_a_trigger_sends_one_group_at_its_end_and_none_per_poll(stats, cometapi_conn):
    from airflow_provider_cometapi.hooks.cometapi import CometAPIHook

    prediction_id = CometAPIHook().create_prediction(SCHNELL, {"prompt": "x", "_emulator": {"duration": 1.0}}).id
    stats.calls.clear()  # the create's counter
    events = [e.payload async for e in PredictionTrigger(prediction_id, poll_interval=0.1).run()]
    assert events[0]["status"] == "succeeded"
    assert cometapi_conn.stats()["polls"] >= 5  # many polls ...
    names = [call[1] for call in stats.calls]
    # ... and one group, sent as the only wait in flight ended.
    assert names == [
        "cometapi.predictions.succeeded",
        "cometapi.images",
        *(["cometapi.predict_time"] if "cometapi.predict_time" in names else []),
        "cometapi.wait",
        "cometapi.predictions.in_flight",
    ]
    assert 0.5 < stats.named("cometapi.wait")[0][2] < 10


async def test_a_create_is_counted(stats, cometapi_conn):
    from airflow_provider_cometapi.hooks.cometapi import CometAPIHook

    CometAPIHook().create_prediction(SCHNELL, {"prompt": "x"})
    async with CometAPIHook() as hook:
        await hook.acreate_prediction(SCHNELL, {"prompt": "y"})
    assert [call[:3] for call in stats.calls] == [
        ("incr", "cometapi.predictions.created", 1),
        ("incr", "cometapi.predictions.created", 1),
    ]


async def test_a_batch_trigger_counts_each_end_once_with_its_cost(stats, emulator, monkeypatch):
    from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
    from airflow_provider_cometapi.triggers.batch import PredictionBatchTrigger
    from tests.fixtures import set_connection

    set_connection(monkeypatch, {**emulator.connection_dict(), "extra": {"prices": {SCHNELL: 0.003}}})
    hook = CometAPIHook()
    ids = [hook.create_prediction(SCHNELL, {"prompt": f"p{i}", "_emulator": {"duration": 0.6}}).id for i in range(3)]
    stats.calls.clear()  # the creates' counters
    trigger = PredictionBatchTrigger(prediction_ids=ids, poll_interval=0.1, resume_after=3, min_defer_seconds=0)
    events = [e.payload async for e in trigger.run()]
    assert sorted(events[0]["finished"]) == sorted(ids)
    assert emulator.stats(detail=False)["polls"] >= 6  # several rounds of polls ...
    # ... and one end each (summed in the event loop), priced from the connection.
    assert sum(call[2] for call in stats.named("cometapi.predictions.succeeded")) == 3
    assert sum(call[2] for call in stats.named("cometapi.cost")) == pytest.approx(0.009)
    assert stats.named("cometapi.predictions.in_flight")[-1][2] == 0
