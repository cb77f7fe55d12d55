"""
The fault matrix: every gateway fault the emulator can inject, with the outcome a DAG author sees.

Each row is played twice, through both ways of waiting: on the worker
(``CreatePredictionOperator(deferrable=False)``) and in the triggerer (``PredictionTrigger``
driven to its event, then the operator's ``execute_complete`` on it). Transient faults must end
in success, persistent ones in one clear failure; no row may take longer than its deadline, and
no row may create a second prediction.

The retry policy is the real one with shorter waits (same attempts, same jittered backoff,
``Retry-After`` honoured); the connection allows 3 retries per request and a 0.5 s read timeout.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from airflow_provider_cometapi.emulator.testing import EmulatorProcess
from airflow_provider_cometapi.exceptions import CometAPIError, PredictionTimeoutError
from airflow_provider_cometapi.hooks import cometapi as hook_module
from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
from airflow_provider_cometapi.operators.prediction import CreatePredictionOperator
from airflow_provider_cometapi.polling import MAX_FAILED_POLLS
from airflow_provider_cometapi.retry import RetryPolicy
from airflow_provider_cometapi.triggers.prediction import PredictionTrigger
from tests.fixtures import set_connection

SCHNELL = "black-forest-labs/flux-schnell"
RETRIES_PER_REQUEST = 3
ATTEMPTS = RETRIES_PER_REQUEST + 1
READ_TIMEOUT = 0.5
POLL_INTERVAL = 0.2
# More faults than one request's retries absorb, fewer than the wait tolerates (failed polls in a row).
LONG_BURST = ATTEMPTS + 2
assert LONG_BURST < ATTEMPTS * MAX_FAILED_POLLS


@dataclass(frozen=True)
class Row:
    name: str
    outcome: str  # "succeeded", "error" (a CometAPIError naming the fault) or "timeout"
    faults: tuple[dict[str, Any], ...] = ()
    control: dict[str, Any] = field(default_factory=dict)
    message: str = ""  # a piece of the failure's message
    outage: float | None = None  # seconds the gateway is away, starting 0.3 s into the wait
    wait_timeout: float = 30.0  # the operator's timeout
    deadline: float = 15.0  # wall seconds the row may take, waiting included


def persistent(**rule: Any) -> tuple[dict[str, Any], ...]:
    return ({"route": "get", "count": -1, **rule},)


def burst(count: int, **rule: Any) -> tuple[dict[str, Any], ...]:
    return ({"route": "get", "count": count, **rule},)


ROWS = [
    Row("throttled burst, Retry-After honoured", "succeeded", burst(3, kind="throttle", retry_after=0.3)),
    Row("throttled for good", "error", persistent(kind="throttle", retry_after=0.1), message="429"),
    Row(
        "5xx burst within one request's retries",
        "succeeded",
        burst(RETRIES_PER_REQUEST, kind="server_error", status=503, html=False),
    ),
    Row(
        "5xx burst longer than one request's retries",
        "succeeded",
        burst(LONG_BURST, kind="server_error", status=502, html=False),
    ),
    Row("5xx for good", "error", persistent(kind="server_error", status=503, html=False), message="503"),
    Row("HTML error pages, burst", "succeeded", burst(LONG_BURST, kind="server_error", status=502, html=True)),
    Row("HTML error pages for good", "error", persistent(kind="server_error", status=502, html=True), message="502"),
    Row("Cloudflare 524 burst", "succeeded", burst(RETRIES_PER_REQUEST, kind="server_error", status=524)),
    Row("answers slower than the read timeout, burst", "succeeded", burst(2, kind="slow", delay=READ_TIMEOUT * 3)),
    Row(
        "answers slower than the read timeout for good",
        "error",
        persistent(kind="slow", delay=READ_TIMEOUT * 3),
        message="did not answer",
        deadline=25.0,
    ),
    Row("connection reset mid-answer, burst", "succeeded", burst(LONG_BURST, kind="reset", partial=True)),
    Row(
        "connection reset mid-answer for good",
        "error",
        persistent(kind="reset", partial=True),
        message="connection broke",
    ),
    Row("malformed JSON, burst", "succeeded", burst(LONG_BURST, kind="malformed_json")),
    Row("malformed JSON for good", "error", persistent(kind="malformed_json"), message="JSON"),
    Row("an unknown status, then success", "succeeded", control={"unknown_status": "warming", "duration": 1.5}),
    Row(
        "an unknown status for good",
        "timeout",
        control={"unknown_status": "warming", "outcome": "never"},
        wait_timeout=2.0,
        message="warming",
    ),
    Row("a prediction that never finishes", "timeout", control={"outcome": "never"}, wait_timeout=2.0),
    Row("the gateway away for a moment", "succeeded", outage=0.6),
    Row("the gateway away for longer than the wait tolerates", "error", outage=4.0, message="connect"),
]


@pytest.fixture(scope="module")
def gateway() -> Iterator[EmulatorProcess]:
    """An emulator of this module's own: outages must not reach other tests."""
    with EmulatorProcess(duration=1.0, starting_for=0.2) as emulator:
        yield emulator


@pytest.fixture
def gateway_conn(gateway: EmulatorProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorProcess]:
    gateway.wait_until_reachable()
    gateway.reset()
    extra = {"max_retries": RETRIES_PER_REQUEST, "timeout": READ_TIMEOUT}
    set_connection(monkeypatch, {**gateway.connection_dict(), "extra": extra})
    # The real policy, waits scaled down: attempts still come from the connection's max_retries.
    monkeypatch.setattr(hook_module, "RetryPolicy", functools.partial(RetryPolicy, backoff_base=0.05, backoff_max=0.3))
    yield gateway
    gateway.wait_until_reachable()  # a row that ended during an outage leaves it to end here


class TaskInstance:
    try_number = 1
    max_tries = 0

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def operator(row: Row) -> CreatePredictionOperator:
    return CreatePredictionOperator(
        task_id="generate",
        model=SCHNELL,
        input={"prompt": "a fault-tolerant fox", "_emulator": row.control},
        poll_interval=POLL_INTERVAL,
        timeout=row.wait_timeout,
        deferrable=False,
    )


def on_the_worker(row: Row, emulator: EmulatorProcess) -> dict[str, Any]:
    return operator(row).execute({"ti": TaskInstance()})  # type: ignore[arg-type]


def in_the_triggerer(row: Row, emulator: EmulatorProcess) -> dict[str, Any]:
    op = operator(row)
    created = CometAPIHook().create_prediction(op.model, op.input)
    trigger = PredictionTrigger(created.id, poll_interval=POLL_INTERVAL, deadline=time.time() + row.wait_timeout)

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    event = asyncio.run(first_event())
    return op.execute_complete({"ti": TaskInstance()}, event)  # type: ignore[arg-type]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("wait", [on_the_worker, in_the_triggerer], ids=["worker", "triggerer"])
@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_fault(row: Row, wait, gateway_conn: EmulatorProcess) -> None:
    for rule in row.faults:
        # Rules go in once the prediction exists: faults on polls, not on the create.
        gateway_conn.add_fault(**rule)
    outage = threading.Timer(0.3, gateway_conn.outage, [row.outage]) if row.outage else None
    if outage is not None:
        outage.start()
    started = time.monotonic()
    try:
        if row.outcome == "succeeded":
            result = wait(row, gateway_conn)
            assert result["status"] == "succeeded"
            assert result["output"]
        else:
            expected = PredictionTimeoutError if row.outcome == "timeout" else CometAPIError
            with pytest.raises(expected) as failure:
                wait(row, gateway_conn)
            assert row.outcome == "timeout" or not isinstance(failure.value, PredictionTimeoutError)
            assert row.message in str(failure.value)
    finally:
        if outage is not None:
            outage.join()
    elapsed = time.monotonic() - started
    assert elapsed < row.deadline, f"{row.name}: took {elapsed:.1f}s, deadline {row.deadline}s"
    if row.outage and row.outcome == "error":
        gateway_conn.wait_until_reachable()
    stats = gateway_conn.stats(detail=False)
    assert stats["creates"] == 1, "a fault must never lead to a second prediction"
    bursts = [rule["count"] for rule in row.faults if rule["count"] > 0]
    if bursts:
        assert stats["faults_served"] == sum(bursts), "every fault of a burst was met (and survived)"
    if row.outcome == "timeout":
        assert stats["cancels"] == 1, "a prediction given up on is cancelled"
