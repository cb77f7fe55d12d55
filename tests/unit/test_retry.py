from __future__ import annotations

import logging

import pytest
import tenacity

from airflow_provider_cometapi.api import create_prediction_request, get_prediction_request
from airflow_provider_cometapi.exceptions import (
    AuthenticationError,
    CometAPIConnectionError,
    CometAPITimeoutError,
    GatewayResponseError,
    RateLimitedError,
    ServerError,
)
from airflow_provider_cometapi.retry import RetryPolicy

GET = get_prediction_request("abc")
CREATE = create_prediction_request("black-forest-labs/flux-schnell", {"prompt": "x"}, wait=None)
FAST = RetryPolicy(max_attempts=4, max_elapsed=5, backoff_base=0.001, backoff_max=0.002)
log = logging.getLogger("test")


def throttled(retry_after=None):
    return RateLimitedError("throttled", status_code=429, retry_after=retry_after)


ERRORS = {
    "429": throttled(),
    "5xx": ServerError("boom", status_code=502),
    "html": GatewayResponseError("page", status_code=524),
    "timeout": CometAPITimeoutError("slow"),
    "reset": CometAPIConnectionError("reset", request_sent=True),
    "refused": CometAPIConnectionError("refused", request_sent=False),
    "401": AuthenticationError("bad key", status_code=401),
}


@pytest.mark.parametrize(
    ("name", "retried_for_get", "retried_for_create"),
    [
        ("429", True, True),
        ("5xx", True, False),
        ("html", True, False),
        ("timeout", True, False),
        ("reset", True, False),
        ("refused", True, True),
        ("401", False, False),
    ],
)
def test_which_failures_are_retried(name, retried_for_get, retried_for_create):
    error = ERRORS[name]
    assert FAST.should_retry(error, idempotent=True) is retried_for_get
    assert FAST.should_retry(error, idempotent=False) is retried_for_create
    assert FAST.should_retry(ValueError("not ours"), idempotent=True) is False


def run(policy, request, failures):
    """Drive the policy's loop over a scripted sequence of failures; return the attempts made."""
    attempts = 0
    for attempt in policy.retrying(request, log):
        with attempt:
            attempts += 1
            if failures:
                raise failures.pop(0)
    return attempts


def test_get_recovers_from_a_short_burst():
    assert run(FAST, GET, [ERRORS["5xx"], ERRORS["timeout"], ERRORS["reset"]]) == 4


def test_get_gives_up_after_max_attempts_with_the_last_error():
    failures = [ServerError(f"boom {i}", status_code=502) for i in range(10)]
    with pytest.raises(ServerError, match="boom 3"):
        run(FAST, GET, failures)
    assert len(failures) == 6


def test_create_is_not_repeated_after_an_ambiguous_failure():
    failures = [ERRORS["5xx"]]
    with pytest.raises(ServerError):
        run(FAST, CREATE, failures)
    assert run(FAST, CREATE, [ERRORS["429"], ERRORS["refused"]]) == 3


def test_retry_after_is_honoured_and_jittered_a_little():
    waits = [FAST.wait_seconds(1, throttled(2.0)) for _ in range(50)]
    assert all(2.0 <= w <= 2.2 for w in waits)


def test_backoff_grows_exponentially_with_jitter_and_a_ceiling():
    policy = RetryPolicy(backoff_base=1.0, backoff_max=8.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        waits = [policy.wait_seconds(attempt, ServerError("x", status_code=500)) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1


def test_total_time_budget_stops_before_a_wait_that_would_exceed_it():
    policy = RetryPolicy(max_attempts=10, max_elapsed=0.5, backoff_base=1.0)
    with pytest.raises(ServerError):
        run(policy, GET, [ServerError("x", status_code=500) for _ in range(10)])


def test_advice_longer_than_we_accept_ends_retries_at_once():
    policy = RetryPolicy(max_retry_after=5)
    failures = [throttled(3600), throttled(1)]
    with pytest.raises(RateLimitedError):
        run(policy, GET, failures)
    assert len(failures) == 1


def test_retries_are_logged_with_the_error_and_the_wait(caplog):
    with caplog.at_level(logging.WARNING, logger="test"):
        run(FAST, GET, [ServerError("gateway said 502", status_code=502)])
    assert "gateway said 502 Retrying in" in caplog.text
    assert "attempt 2 of 4" in caplog.text


async def test_async_loop_uses_the_same_policy():
    attempts = 0
    failures = [ERRORS["429"], ERRORS["5xx"]]
    async for attempt in FAST.async_retrying(GET, log):
        with attempt:
            attempts += 1
            if failures:
                raise failures.pop(0)
    assert attempts == 3
    assert isinstance(FAST.async_retrying(GET, log), tenacity.AsyncRetrying)


# --- The fast path: one try, the loop only after a retryable failure ------------------------


class Script:
    """An attempt that fails with the scripted errors, then answers ``"ok"``; counts its calls."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"

    async def coroutine(self) -> str:
        return self()


def no_loop_allowed(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the retry loop was built for a call that needed none")

    monkeypatch.setattr(tenacity.Retrying, "__init__", refuse)
    monkeypatch.setattr(tenacity.AsyncRetrying, "__init__", refuse)


def test_call_that_succeeds_builds_no_loop_and_asks_for_no_logger(monkeypatch):
    no_loop_allowed(monkeypatch)
    script = Script()
    assert FAST.call(GET, lambda: pytest.fail("logger asked for"), script) == "ok"
    assert script.calls == 1


async def test_acall_that_succeeds_builds_no_loop(monkeypatch):
    no_loop_allowed(monkeypatch)
    script = Script()
    assert await FAST.acall(GET, lambda: pytest.fail("logger asked for"), script.coroutine) == "ok"
    assert script.calls == 1


def test_call_that_must_not_retry_raises_the_first_error_at_once(monkeypatch):
    no_loop_allowed(monkeypatch)
    script = Script(ERRORS["5xx"])
    with pytest.raises(ServerError):
        FAST.call(CREATE, lambda: log, script)  # a create after a 5xx may have cost money
    assert script.calls == 1


@pytest.mark.parametrize("use_async", [False, True])
async def test_call_retries_as_the_loop_does(use_async, caplog):
    script = Script(ERRORS["5xx"], ERRORS["timeout"], ERRORS["refused"])
    with caplog.at_level(logging.WARNING, logger="test"):
        if use_async:
            assert await FAST.acall(GET, lambda: log, script.coroutine) == "ok"
        else:
            assert FAST.call(GET, lambda: log, script) == "ok"
    assert script.calls == 4  # the first try counts as attempt 1 of max_attempts = 4
    assert "attempt 2 of 4" in caplog.text and "attempt 4 of 4" in caplog.text


@pytest.mark.parametrize("use_async", [False, True])
async def test_call_gives_up_after_max_attempts_with_the_last_error(use_async):
    script = Script(*(ServerError(f"boom {i}", status_code=502) for i in range(10)))
    with pytest.raises(ServerError, match="boom 3"):
        if use_async:
            await FAST.acall(GET, lambda: log, script.coroutine)
        else:
            FAST.call(GET, lambda: log, script)
    assert script.calls == 4
