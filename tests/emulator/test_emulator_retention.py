"""Finished predictions are forgotten: after --output-ttl plus --forget-after, or when the store is full."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from airflow_provider_cometapi.emulator import EmulatorConfig, EmulatorProcess
from airflow_provider_cometapi.emulator.models import MODELS, Control
from airflow_provider_cometapi.emulator.state import Store

from .helpers import SCHNELL, Api

if TYPE_CHECKING:
    from collections.abc import Iterator

MIB = 1024 * 1024


# -- the store on its own clock ----------------------------------------------------------------


def make_store(**settings: Any) -> Store:
    return Store(EmulatorConfig(output_ttl=10, forget_after=5, **settings))


def add(store: Store, now: float, duration: float = 1.0, body_bytes: int = 100, outcome: str = "succeeded") -> str:
    assert store.retention.make_room(now, body_bytes)
    control = Control(duration=duration, starting_for=0, outcome=outcome)
    return store.create(MODELS[SCHNELL], {"prompt": "x"}, control, now, time.time(), body_bytes).id


def test_forgotten_only_after_ttl_plus_forget_after() -> None:
    store = make_store()
    pid = add(store, now=0.0, duration=1.0)  # terminal at 1, expired at 11, forgotten at 16
    assert store.retention.sweep(15.9) == 0
    assert pid in store.predictions
    assert store.retention.sweep(16.0) == 1
    assert pid not in store.predictions
    assert store.retention.stored_bytes == 0
    assert store.stats_dict(16.0, detail=False)["evicted"] == 1


def test_running_and_never_ending_predictions_are_kept() -> None:
    store = make_store()
    running = add(store, now=0.0, duration=1_000.0)
    never = add(store, now=0.0, outcome="never")
    assert store.retention.sweep(500.0) == 0
    assert {running, never} <= store.predictions.keys()


def test_a_cancel_starts_the_clock_from_the_cancel() -> None:
    store = make_store()
    pid = add(store, now=0.0, outcome="never")
    store.cancel(store.predictions[pid], 2.0)
    assert store.retention.sweep(16.9) == 0
    assert store.retention.sweep(17.0) == 1
    early = add(store, now=20.0, duration=100.0)
    store.cancel(store.predictions[early], 21.0)
    assert store.retention.sweep(36.0) == 1  # by the cancel, not the natural end at 120
    assert store.retention.sweep(200.0) == 0  # the natural end's entry is stale, skipped


def test_past_the_count_the_longest_finished_go_first() -> None:
    store = make_store(max_predictions=3)
    a = add(store, now=0.0, duration=2.0)
    b = add(store, now=0.0, duration=1.0)
    c = add(store, now=0.0, duration=3.0)
    d = add(store, now=5.0, duration=1.0)  # b finished longest ago
    assert b not in store.predictions
    assert set(store.predictions) == {a, c, d}
    add(store, now=5.0, duration=1.0)
    assert set(store.predictions) >= {c, d}
    assert a not in store.predictions
    assert store.stats_dict(5.0, detail=False)["evicted"] == 2


def test_a_full_store_of_running_predictions_takes_no_more() -> None:
    store = make_store(max_predictions=2)
    add(store, now=0.0, duration=10.0)
    add(store, now=0.0, duration=10.0)
    assert not store.retention.make_room(5.0, 100)
    assert store.retention.make_room(10.0, 100)  # one finished: it makes room


def test_past_the_stored_bytes_finished_ones_go_first() -> None:
    store = make_store(max_stored_bytes=10 * MIB, max_request_bytes=4 * MIB)
    first = add(store, now=0.0, duration=0.0, body_bytes=4 * MIB)
    add(store, now=0.0, duration=0.5, body_bytes=4 * MIB)
    add(store, now=1.0, duration=0.0, body_bytes=4 * MIB)
    assert first not in store.predictions
    assert store.retention.stored_bytes == 8 * MIB
    running = [add(store, now=2.0, duration=100.0, body_bytes=4 * MIB) for _ in range(2)]
    assert store.retention.stored_bytes == 8 * MIB  # both finished ones made room
    assert not store.retention.make_room(2.0, 4 * MIB)  # the running ones stay
    assert set(store.predictions) == set(running)


def test_reset_forgets_the_accounting_too() -> None:
    store = make_store()
    add(store, now=0.0)
    store.reset()
    assert store.retention.stored_bytes == 0
    assert store.retention.sweep(1e9) == 0
    assert store.stats_dict(0.0, detail=False)["evicted"] == 0


# -- a real emulator -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def forgetful() -> Iterator[EmulatorProcess]:
    args = ["--output-ttl", "0.3", "--forget-after", "0.3", "--max-predictions", "20"]
    with EmulatorProcess(duration=0.1, starting_for=0, extra_args=args) as proc:
        yield proc


def test_a_finished_prediction_is_forgotten_after_ttl_and_margin(forgetful: EmulatorProcess) -> None:
    forgetful.reset()
    api = Api(forgetful)
    done = api.create_ok(control={"duration": 0})
    url = done["output"][0]
    running = api.create_ok(control={"outcome": "never"})["id"]
    time.sleep(0.35)
    expired = api.get_ok(done["id"])  # past the TTL: still known, outputs gone
    assert expired["data_removed"] is True
    assert requests.get(url, timeout=10).status_code == 404
    deadline = time.monotonic() + 5
    while api.get(done["id"]).status_code != 404:
        assert time.monotonic() < deadline, "the prediction was never forgotten"
        time.sleep(0.05)
    stats = forgetful.stats()
    assert stats["evicted"] == 1
    assert set(stats["predictions"]) == {running}  # the running one stays
    assert 0 < stats["stored_bytes"] < 200  # the running one's create body


def test_past_max_predictions_the_store_shrinks(forgetful: EmulatorProcess) -> None:
    forgetful.reset()
    api = Api(forgetful)
    ids = [api.create_ok(control={"duration": 0})["id"] for _ in range(50)]
    stats = forgetful.stats(detail=False)
    assert stats["total_predictions"] == 20
    assert stats["evicted"] == 30
    assert api.get(ids[0]).status_code == 404
    assert api.get_ok(ids[-1])["status"] == "succeeded"


def test_a_store_full_of_running_predictions_answers_429(forgetful: EmulatorProcess) -> None:
    forgetful.reset()
    api = Api(forgetful)
    for _ in range(20):
        api.create_ok(control={"outcome": "never"})
    full = api.create()
    assert full.status_code == 429
    assert full.headers["Retry-After"] == "1"
    assert "--max-predictions" in full.json()["detail"]
    assert forgetful.stats(detail=False)["creates"] == 20


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
@pytest.mark.parametrize("duration", [0, 3600], ids=["finished", "running"])
def test_memory_stays_bounded_with_many_large_inputs(duration: float) -> None:
    # The case: 40 creates of 7 MiB each took the emulator from 69 to 663 MiB.
    image = "data:image/png;base64," + "A" * (7 * MIB)
    with EmulatorProcess(duration=duration) as emu:  # the default bounds: 64 MiB of bodies
        api = Api(emu)
        api.create_ok(control={"duration": 0})
        before = rss_mib(emu.pid or 0)
        answers = [api.create(image=image).status_code for _ in range(40)]
        grown = rss_mib(emu.pid or 0) - before
        stats = emu.stats(detail=False)
    assert stats["stored_bytes"] <= 64 * MIB
    if duration:
        assert answers.count(201) == 9  # then full of running predictions: 429 until one finishes
        assert set(answers[9:]) == {429}
    else:
        assert set(answers) == {201}
        assert stats["evicted"] >= 31
    # Each kept body is held about twice (the input and the cached answer): 64 MiB -> ~130 MiB.
    assert grown < 250, f"RSS grew by {grown:.0f} MiB"
