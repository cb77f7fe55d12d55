"""
The hostile-gateway matrix: what a compromised or broken CometAPI (or file host) can answer, and
what the provider makes of it.

The gateway is ``tests/reliability/hostile_gateway.py``, a real HTTP server in a subprocess on
loopback. Waiting rows are played on the worker (``CreatePredictionOperator(deferrable=False)``)
and in the triggerer (``PredictionTrigger`` driven to its event, then the operator's
``execute_complete``), and the hook the place uses is asked directly too, for the error class;
storage rows through ``SavePredictionOutputsOperator.execute``. Every row asserts the outcome,
that nothing was written outside the destination (no ``evil*``, no ``.py``/``.sh``/``.html``
anywhere in the tree around it), a bound on the growth of this process's peak memory and on
wall time, and that no secret (the API key, a signed URL's query) is in any message, event or
log. Rows that time out also assert that the prediction was cancelled.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_cometapi.exceptions import (
    AuthenticationError,
    CometAPIConnectionError,
    CometAPIError,
    CometAPITimeoutError,
    OutputExpiredError,
    PredictionFailedError,
    PredictionTimeoutError,
    RateLimitedError,
    ServerError,
    TooManyRedirectsError,
)
from airflow_provider_cometapi.hooks import cometapi as hook_module
from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
from airflow_provider_cometapi.models import Prediction
from airflow_provider_cometapi.operators.prediction import CreatePredictionOperator
from airflow_provider_cometapi.operators.storage import SavePredictionOutputsOperator
from airflow_provider_cometapi.retry import RetryPolicy
from airflow_provider_cometapi.triggers.prediction import PredictionTrigger
from tests.fixtures import TaskInstance, set_connection
from tests.reliability.hostile_gateway import PNG, HostileGateway, closed_port

# The classes issue 13 adds; until they land on main this module fails to import, by design.
from airflow_provider_cometapi.exceptions import (  # isort: skip
    MalformedOutputError,  # noqa: F401 - part of the contract this matrix checks against
    OutputTooLargeError,
    PredictionWaitError,
    ResponseTooLargeError,
    UnexpectedPredictionError,
    UnsupportedOutputURLError,
)

SCHNELL = "black-forest-labs/flux-schnell"
KEY = "sk-hostile-5f0c9a1e7d3b42c8"
ACCESS_KEY = "AKIAHOSTILEEXAMPLE7Q"
SIGNATURE = "9c1e5b7a3f0d2e4c6b8a0f1e3d5c7b9a"
SIGNED_QUERY = (
    f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={ACCESS_KEY}%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
    f"&X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600&X-Amz-Signature={SIGNATURE}"
)
USER_PASSWORD = "hunter2-userinfo"
# The key's first characters too: a key cut across a message's limit must leave none of them.
SECRETS = (KEY, KEY[:12], ACCESS_KEY, SIGNATURE, "X-Amz-Signature", "X-Amz-Credential", USER_PASSWORD)
MIB = 1024 * 1024
POLL_INTERVAL = 0.1
RETRIES_PER_REQUEST = 1  # two attempts per request: hostile rows stay fast
DRIP_WAIT = 1.5  # the wait's timeout in the dripping rows
DRIP_MARGIN = 2.5  # what a dripping row may take past it: the timeout event, the cancel
MAX_OUTPUT = MIB  # max_output_bytes for the rows about it
PYTHON = base64.b64encode(b"import os\nos.system('echo pwned')\n").decode()
LOG_MARK = "denoise step"


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileGateway]:
    with HostileGateway(lifetime=600, tls=True) as gateway:
        # Its certificate trusted on the async path as a deployment's CA bundle would be (aiohttp
        # reads the system's once, at import); the blocking path reads REQUESTS_CA_BUNDLE per row.
        import aiohttp.connector

        aiohttp.connector._SSL_CONTEXT_VERIFIED.load_verify_locations(gateway.ca_file)
        yield gateway


@pytest.fixture
def gateway(hostile: HostileGateway, monkeypatch: pytest.MonkeyPatch) -> HostileGateway:
    set_connection(monkeypatch, hostile.connection_dict(KEY, max_retries=RETRIES_PER_REQUEST))
    # The real policy, waits scaled down (as in the fault matrix).
    monkeypatch.setattr(hook_module, "RetryPolicy", functools.partial(RetryPolicy, backoff_base=0.05, backoff_max=0.3))
    return hostile


def connect(monkeypatch: pytest.MonkeyPatch, gateway: HostileGateway, **extra: Any) -> None:
    set_connection(monkeypatch, gateway.connection_dict(KEY, max_retries=RETRIES_PER_REQUEST, **extra))


def substituted(value: Any, places: dict[str, str]) -> Any:
    """The scenario with ``{base}``, ``{closed}`` and ``{tmp}`` filled in."""
    if isinstance(value, str):
        for name, text in places.items():
            value = value.replace("{" + name + "}", text)
        return value
    if isinstance(value, dict):
        return {key: substituted(item, places) for key, item in value.items()}
    if isinstance(value, list):
        return [substituted(item, places) for item in value]
    return value


# --- Measuring: peak memory, secrets, the file tree --------------------------------------------


def _status_kib(name: str) -> int:
    match = re.search(rf"^{name}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    assert match, f"no {name} in /proc/self/status"
    return int(match[1])


class PeakMemory:
    """Growth of this process's peak RSS during a block (Linux: VmHWM, reset through clear_refs)."""

    def __enter__(self) -> PeakMemory:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        self.before = _status_kib("VmRSS")
        self.growth_mib = 0.0
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.growth_mib = (_status_kib("VmHWM") - self.before) / 1024


def error_texts(error: BaseException | None) -> list[str]:
    """Everything an error carries: its message, its repr and its attributes (``url``, ``detail``...)."""
    if error is None:
        return []
    return [str(error), repr(error), json.dumps(vars(error), default=str)]


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked: ...{text[max(0, text.find(secret) - 80) :][:200]}..."


def assert_nothing_outside(root: Path, destination: Path) -> None:
    """Every file in the tree is inside ``destination``; no file is named evil* or executable-looking."""
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        assert not path.name.startswith("evil"), f"hostile name stored: {path}"
        assert path.suffix not in (".py", ".sh", ".html", ".exe"), f"executable extension stored: {path}"
        assert path.resolve().is_relative_to(destination.resolve()), f"written outside the destination: {path}"


def mentions_size(message: str, size: int) -> bool:
    mib = size / MIB
    return any(text in message for text in (str(size), f"{size:,}", f"{mib:g} MiB", f"{mib:.1f} MiB", f"{mib:.0f} MiB"))


# --- The waiting rows: the worker and the triggerer ----------------------------------------------


@dataclass(frozen=True)
class WaitRow:
    name: str
    get: dict[str, Any] = field(default_factory=dict)  # how polls are answered
    create: dict[str, Any] = field(default_factory=dict)  # how the create is answered
    # "error": row.error (or PredictionWaitError, the wait having ended on it); "timeout": the
    # wait's timeout, prediction cancelled; "capped": succeeded with the log capped, or refused
    # as too large (ResponseTooLargeError): either way bounded.
    outcome: str = "error"
    error: type[CometAPIError] = CometAPIError
    message: str = ""  # a piece of the failure's message
    places: tuple[str, ...] = ("worker", "triggerer")
    timeout: float = 20.0  # the operator's (and the trigger's) wait
    deadline: float = 8.0  # wall seconds the row may take
    memory_mib: float = 64.0  # peak memory growth allowed
    hook_error: type[CometAPIError] | None = None  # the class the hook raises itself (default: error)
    # The polls the gateway must see (a failure that cannot change: one), or that per place.
    gets: int | dict[str, int] | None = None
    tls: bool = False  # the connection's Base URL is the gateway's https port ({base} stays its plain-http one)


HUGE = 100 * MIB
ROWS = [
    WaitRow(
        "a poll answers a traversal id",
        get={"fields": {"id": "../../dags/evil"}},
        error=UnexpectedPredictionError,
        message="../../dags/evil",
    ),
    WaitRow(
        "a poll answers an absolute id",
        get={"fields": {"id": "/tmp/evil"}},
        error=UnexpectedPredictionError,
        message="/tmp/evil",
    ),
    WaitRow(
        "a poll answers another prediction",
        get={"fields": {"id": "someone-elses-prediction"}},
        error=UnexpectedPredictionError,
        message="someone-elses-prediction",
    ),
    WaitRow(
        "the create answers a traversal id",
        create={"fields": {"id": "../../dags/evil"}},
        error=UnexpectedPredictionError,
        message="../../dags/evil",
        places=("worker",),
    ),
    WaitRow("a poll answer of 100 MB, announced", get={"pad_bytes": HUGE}, error=ResponseTooLargeError),
    WaitRow(
        "a poll answer of 100 MB, unannounced", get={"pad_bytes": HUGE, "announce": False}, error=ResponseTooLargeError
    ),
    WaitRow(
        "a 502 with a 100 MB body",
        get={"status_code": 502, "pad_bytes": HUGE, "announce": False},
        error=ServerError,
        message="502",
    ),
    WaitRow(
        "prediction logs of 20 MB in short lines",
        get={"log_bytes": 20 * MIB, "log_line": 100},
        outcome="capped",
        # Within the answer bound the answer may be read whole: two copies of it, no more.
        memory_mib=128.0,
    ),
    WaitRow("prediction logs of 100 MB in short lines", get={"log_bytes": HUGE, "log_line": 100}, outcome="capped"),
    WaitRow(
        "a 401 that echoes the key",
        get={"echo_key": True},
        error=AuthenticationError,
        message="401",
    ),
    WaitRow(
        # "Invalid token: Bearer " is 22 characters: the key starts 12 characters before the detail's cut at 300.
        "a 401 that echoes the key across the cut of its detail",
        get={"echo_key": True, "echo_pad": 300 - 12 - 22},
        error=AuthenticationError,
        message="401",
    ),
    WaitRow(
        # The hook answers the prediction (it failed): its error, logs and input are checked for the key.
        "a failed prediction whose error, logs and input echo the key",
        get={"fields": {"status": "failed"}, "echo_key_in": ["error", "logs", "input"]},
        error=PredictionFailedError,
        message="upstream rejected token ***",
    ),
    WaitRow(
        "a poll redirected to file:///etc/passwd",
        get={"location": "file:///etc/passwd?" + SIGNED_QUERY},
        error=UnsupportedOutputURLError,
        message="scheme 'file'",
        gets=1,
    ),
    WaitRow(
        "a poll redirected to ftp://",
        get={"location": "ftp://127.0.0.1/replicate/v1/predictions/x?" + SIGNED_QUERY},
        error=UnsupportedOutputURLError,
        message="scheme 'ftp'",
        gets=1,
    ),
    WaitRow(
        "the create redirected to file:///etc/passwd",
        create={"location": "file:///etc/passwd"},
        error=UnsupportedOutputURLError,
        message="scheme 'file'",
        places=("worker",),
    ),
    WaitRow(
        "a poll of an https gateway redirected to plain http",
        get={"location": "{base}/replicate/v1/predictions/hostile00001?" + SIGNED_QUERY},
        error=UnsupportedOutputURLError,
        message="from https to plain http",
        # The worker refuses the redirect before following it. The triggerer's aiohttp follows it
        # (without the key) and the answer is refused: here the plain-http target redirects to
        # itself, so aiohttp meets its redirect limit first, and the error still names the downgrade.
        gets={"worker": 1, "triggerer": 11},
        tls=True,
    ),
    WaitRow(
        "the create of an https gateway redirected to plain http",
        create={"location": "{base}/replicate/v1/predictions?" + SIGNED_QUERY},
        error=UnsupportedOutputURLError,
        message="from https to plain http",
        places=("worker",),
        tls=True,
    ),
    WaitRow(
        # The same answer on every follow: a loop, met again by any retry, so there is none.
        "a poll redirected to itself, in a loop",
        get={"location": "{base}/replicate/v1/predictions/hostile00001?" + SIGNED_QUERY},
        error=TooManyRedirectsError,
        message="redirected more than 10 times",
        gets=11,
    ),
    WaitRow(
        "a 429 with a retry_after of 400 digits",
        get={"retry_after_digits": 400},
        error=RateLimitedError,
        message="429",
    ),
    WaitRow(
        "the create answers a 429 with a retry_after of 400 digits",
        create={"retry_after_digits": 400},
        error=RateLimitedError,
        message="429",
        places=("worker",),
    ),
    WaitRow(
        "a poll answer that drips its status line",
        get={"drip": "status"},
        outcome="timeout",
        timeout=DRIP_WAIT,
        deadline=DRIP_WAIT + DRIP_MARGIN,
        hook_error=CometAPITimeoutError,
    ),
    WaitRow(
        "a poll answer that drips its headers",
        get={"drip": "headers"},
        outcome="timeout",
        timeout=DRIP_WAIT,
        deadline=DRIP_WAIT + DRIP_MARGIN,
        hook_error=CometAPITimeoutError,
    ),
    WaitRow(
        "a poll answer that drips its body",
        get={"drip": "body", "fields": {"status": "processing"}},
        outcome="timeout",
        timeout=DRIP_WAIT,
        deadline=DRIP_WAIT + DRIP_MARGIN,
        hook_error=CometAPITimeoutError,
    ),
]


def operator(row: WaitRow) -> CreatePredictionOperator:
    return CreatePredictionOperator(
        task_id="generate",
        model=SCHNELL,
        input={"prompt": "a fox in a hostile land"},
        poll_interval=POLL_INTERVAL,
        timeout=row.timeout,
        deferrable=False,
    )


def on_the_worker(row: WaitRow, events: list[dict[str, Any]]) -> dict[str, Any]:
    return operator(row).execute({"ti": TaskInstance()})  # type: ignore[arg-type]


def in_the_triggerer(row: WaitRow, events: list[dict[str, Any]]) -> dict[str, Any]:
    op = operator(row)
    hook = CometAPIHook()
    try:
        created = hook.create_prediction(op.model, op.input)
    finally:
        hook.close()
    trigger = PredictionTrigger(created.id, poll_interval=POLL_INTERVAL, deadline=time.time() + row.timeout)

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    events.append(asyncio.run(asyncio.wait_for(first_event(), row.timeout + 30)))
    return op.execute_complete({"ti": TaskInstance()}, events[-1])  # type: ignore[arg-type]


PLACES: dict[str, Callable[[WaitRow, list[dict[str, Any]]], dict[str, Any]]] = {
    "worker": on_the_worker,
    "triggerer": in_the_triggerer,
}
CASES = [(row, place) for row in ROWS for place in row.places]


def hook_error_of(row: WaitRow, place: str, prediction_id: str) -> BaseException | Prediction | None:
    """What the hook itself raises (or answers) for the row's answer, sync on the worker and async in the triggerer."""
    deadline = time.time() + 1.0
    if place == "worker":
        hook = CometAPIHook()
        try:
            if row.create:
                return hook.create_prediction(SCHNELL, {"prompt": "x"})
            return hook.get_prediction(prediction_id, deadline=deadline)
        except Exception as error:
            return error
        finally:
            hook.close()

    async def call() -> BaseException | Prediction | None:
        async with CometAPIHook() as hook:
            try:
                return await hook.aget_prediction(prediction_id, deadline=deadline)
            except Exception as error:
                return error

    return asyncio.run(asyncio.wait_for(call(), 10))


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("row", "place"), CASES, ids=[f"{row.name} [{place}]" for row, place in CASES])
def test_hostile_answer(
    row: WaitRow,
    place: str,
    gateway: HostileGateway,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd,
) -> None:
    if row.tls:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", gateway.ca_file)
        set_connection(
            monkeypatch,
            {**gateway.connection_dict(KEY, max_retries=RETRIES_PER_REQUEST), "host": gateway.tls_base_url},
        )
    places = {"base": gateway.base_url}
    gateway.play({"create": substituted(row.create, places), "get": substituted(row.get, places)})
    events: list[dict[str, Any]] = []
    raised: BaseException | None = None
    result: dict[str, Any] | None = None
    started = time.monotonic()
    with caplog.at_level(logging.INFO), PeakMemory() as memory:
        try:
            result = PLACES[place](row, events)
        except Exception as error:
            raised = error
    elapsed = time.monotonic() - started
    stats = gateway.stats()
    captured = capfd.readouterr()
    logged = caplog.text + captured.out + captured.err
    assert_no_secret(*error_texts(raised), *(json.dumps(event, default=str) for event in events), logged)
    assert_nothing_outside(tmp_path, tmp_path)

    if row.outcome == "timeout":
        assert isinstance(raised, PredictionTimeoutError), f"expected the wait's timeout, got {raised!r}"
        assert stats["cancels"] == 1, "a prediction given up on is cancelled, even when the gateway drips"
    elif row.outcome == "capped":
        if raised is not None:
            assert isinstance(raised, ResponseTooLargeError | PredictionWaitError), f"got {raised!r}"
        else:
            assert result is not None and result["status"] == "succeeded"
            assert "logs" not in result or len(result["logs"]) <= 64 * 1024
        lines = max(caplog.text.count(LOG_MARK), captured.out.count(LOG_MARK))
        assert lines <= 250, f"{lines} log lines of the prediction reached the task log"
        assert len(logged) < 2 * MIB, f"{len(logged)} characters logged"
    else:
        assert raised is not None, f"expected {row.error.__name__}, the wait returned {result!r}"
        assert isinstance(raised, CometAPIError), f"a raw {type(raised).__name__} reached the DAG author: {raised}"
        assert isinstance(raised, row.error | PredictionWaitError), f"expected {row.error.__name__}, got {raised!r}"
        assert row.message in str(raised)
    for event in events:
        assert len(json.dumps(event, default=str)) < 256 * 1024, "a trigger event must stay small"
    assert elapsed < row.deadline, f"{row.name}: took {elapsed:.1f}s, deadline {row.deadline}s"
    assert memory.growth_mib < row.memory_mib, f"{row.name}: peak memory grew {memory.growth_mib:.0f} MiB"
    assert stats["creates"] == 1, "a hostile answer must never lead to a second prediction"
    gets = row.gets.get(place) if isinstance(row.gets, dict) else row.gets
    if gets is not None:
        assert stats["gets"] == gets, f"polled {stats['gets']} times: a failure that cannot change is not retried"
    assert not any(".." in path or "evil" in path for path in stats["paths"]), "a hostile id was used in a request"

    if row.outcome != "capped":
        error = hook_error_of(row, place, "hostile00001")
        if row.error is PredictionFailedError:  # not an error of the hook: the prediction it answers
            assert isinstance(error, Prediction) and error.status == "failed", f"the hook answered {error!r}"
            assert_no_secret(json.dumps(error.to_dict()), json.dumps(dict(error.raw)), error.logs, error.error or "")
            return
        expected = row.hook_error or row.error
        assert isinstance(error, expected), f"the hook raised {error!r}, expected {expected.__name__}"
        assert_no_secret(*error_texts(error))


# --- The storage rows --------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreRow:
    name: str
    get: dict[str, Any] = field(default_factory=dict)  # fields of the answered prediction
    files: dict[str, Any] = field(default_factory=dict)
    error: type[CometAPIError] | None = None  # None: stored
    message: tuple[str, ...] = ()  # pieces of the failure's message
    stored: tuple[str, ...] = ()  # the files in the destination afterwards ({id} is the prediction id)
    extra: dict[str, Any] = field(default_factory=dict)  # connection extras
    deadline: float = 6.0
    memory_mib: float = 64.0
    no_retries: bool = False  # fails at once: no "Retrying" in the log, the file host never asked
    env: dict[str, str] = field(default_factory=dict)  # environment of the worker ({base} filled in)
    fetched_once: bool = False  # fails at the first answer of the file host: fetched once, no "Retrying"
    fetched: int | None = None  # fails after this many asks of the file host (one request's), no "Retrying"


PREDICTION = "hostile-store-1"
BIN = ("{id}_0.bin", "{id}.json")


def output(url: str, **fields: Any) -> dict[str, Any]:
    return {"fields": {"output": [url], **fields}}


def served(name: str, content_type: str | None, data: bytes = b"#!/bin/sh\necho pwned\n") -> dict[str, Any]:
    return {name: {"content_type": content_type, "b64": base64.b64encode(data).decode()}}


STORE_ROWS = [
    StoreRow(
        "a traversal id with a Python data: output",
        output(f"data:text/x-python;base64,{PYTHON}", id="../../dags/evil"),
        error=UnexpectedPredictionError,
        message=("../../dags/evil",),
    ),
    StoreRow(
        "an absolute id",
        output("{base}/files/ok.png", id="{tmp}/outside/evil"),
        error=UnexpectedPredictionError,
        message=("/outside/evil",),
    ),
    StoreRow(
        "another prediction's id",
        output("{base}/files/ok.png", id="someone-elses-prediction"),
        error=UnexpectedPredictionError,
        message=("someone-elses-prediction",),
    ),
    StoreRow("a Python data: output", output(f"data:text/x-python;base64,{PYTHON}"), stored=BIN),
    StoreRow(
        "a shell script data: output",
        output(f"data:application/x-sh;base64,{base64.b64encode(b'echo pwned').decode()}"),
        stored=BIN,
    ),
    StoreRow(
        "a .py URL served as text/x-python",
        output("{base}/files/evil.py"),
        served("evil.py", "text/x-python"),
        stored=BIN,
    ),
    StoreRow(
        "a .sh URL served as application/x-sh",
        output("{base}/files/run.sh"),
        served("run.sh", "application/x-sh"),
        stored=BIN,
    ),
    StoreRow(
        "a .html URL served as text/html",
        output("{base}/files/page.html"),
        served("page.html", "text/html"),
        stored=BIN,
    ),
    StoreRow(
        "an .exe URL served as application/x-msdownload",
        output("{base}/files/tool.exe"),
        served("tool.exe", "application/x-msdownload"),
        stored=BIN,
    ),
    StoreRow("a .py URL with no content type", output("{base}/files/script.py"), served("script.py", None), stored=BIN),
    StoreRow(
        "a .py URL served as image/png: the media type decides",
        output("{base}/files/image.py"),
        served("image.py", "image/png", PNG),
        stored=("{id}_0.png", "{id}.json"),
    ),
    StoreRow(
        "a file:// output",
        output("file:///etc/passwd"),
        error=UnsupportedOutputURLError,
        message=("file",),
        no_retries=True,
    ),
    StoreRow(
        "an ftp:// output",
        output("ftp://127.0.0.1/outputs/image.png"),
        error=UnsupportedOutputURLError,
        message=("ftp",),
        no_retries=True,
    ),
    StoreRow(
        "an output redirected to file:///etc/passwd",
        output("{base}/files/moved.png?" + SIGNED_QUERY),
        {"moved.png": {"location": "file:///etc/passwd?" + SIGNED_QUERY}},
        error=UnsupportedOutputURLError,
        message=("moved.png", "scheme 'file'"),
        fetched_once=True,
    ),
    StoreRow(
        "an output redirected to ftp://",
        output("{base}/files/moved.png"),
        {"moved.png": {"location": "ftp://127.0.0.1/outputs/image.png?" + SIGNED_QUERY}},
        error=UnsupportedOutputURLError,
        message=("moved.png", "scheme 'ftp'"),
        fetched_once=True,
    ),
    StoreRow(
        "an https output redirected to plain http",
        output("{tls_gateway}/files/moved.png?" + SIGNED_QUERY),
        {"moved.png": {"location": "{base}/files/ok.png?" + SIGNED_QUERY}},
        error=UnsupportedOutputURLError,
        message=("moved.png", "from https to plain http"),
        fetched_once=True,
        env={"REQUESTS_CA_BUNDLE": "{ca}"},
    ),
    StoreRow(
        "an output redirected to itself, in a loop",
        output("{base}/files/loop.png?" + SIGNED_QUERY),
        {"loop.png": {"location": "{base}/files/loop.png?" + SIGNED_QUERY}},
        error=TooManyRedirectsError,
        message=("loop.png", "redirected more than 10 times", "file host fault"),
        fetched=11,
    ),
    StoreRow(
        "an endless output (signed URL)",
        output("{base}/files/endless.png?" + SIGNED_QUERY),
        {"endless.png": {"endless": True, "announce": False}},
        error=OutputTooLargeError,
        message=("endless.png",),
        extra={"max_output_bytes": MAX_OUTPUT},
    ),
    StoreRow(
        "an output announced over max_output_bytes",
        output("{base}/files/announced.png"),
        {"announced.png": {"size": 5 * MIB}},
        error=OutputTooLargeError,
        message=("announced.png",),
        extra={"max_output_bytes": MAX_OUTPUT},
    ),
    StoreRow(
        "an inline output over max_output_bytes",
        output("data:image/png;base64," + base64.b64encode(b"\0" * (2 * MAX_OUTPUT)).decode()),
        error=OutputTooLargeError,
        extra={"max_output_bytes": MAX_OUTPUT},
        no_retries=True,
    ),
    StoreRow(
        "an output that drips one byte a second",
        output("{base}/files/drip.png"),
        {"drip.png": {"size": 4096, "drip": True, "drip_for": 30}},
        error=CometAPITimeoutError,
        # Two attempts, each cut off by the whole-download deadline; a byte a second never trips the read timeout.
        extra={"download_timeout": 2, "timeout": 30},
        deadline=8.0,
    ),
    StoreRow(
        "a 404 with a 400 MB body",
        output("{base}/files/gone.png"),
        {"gone.png": {"status": 404, "size": 400 * MIB, "announce": False}},
        error=OutputExpiredError,
    ),
    StoreRow(
        "a 401 from the file host that echoes the key",
        output("{base}/files/private.png"),
        {"private.png": {"status": 401, "b64": base64.b64encode(f"bad token Bearer {KEY}".encode()).decode()}},
        error=OutputExpiredError,
    ),
    StoreRow(
        "a signed URL that is gone (403)",
        output("{base}/files/signed.png?" + SIGNED_QUERY),
        {"signed.png": {"status": 403}},
        error=OutputExpiredError,
        message=("signed.png",),
    ),
    StoreRow(
        "a signed URL that keeps failing (500)",
        output("{base}/files/signed.png?" + SIGNED_QUERY),
        {"signed.png": {"status": 500}},
        error=ServerError,
        message=("signed.png",),
    ),
    StoreRow(
        "a signed URL on a host that refuses connections",
        output("{closed}/files/signed.png?" + SIGNED_QUERY),
        error=CometAPIConnectionError,
        message=("signed.png",),
    ),
    StoreRow(
        # urllib3's error names the URL it tried, query and all ("Max retries exceeded with url: ...").
        "a signed https URL on a plain-http port (TLS fails)",
        output("{tls}/files/signed.png?" + SIGNED_QUERY),
        error=CometAPIConnectionError,
        message=("signed.png", "SSL"),
    ),
    StoreRow(
        "a signed https URL through a proxy that refuses the tunnel",
        output("https://127.0.0.1:{closed_port}/files/signed.png?" + SIGNED_QUERY),
        error=CometAPIConnectionError,
        message=("signed.png", "proxy"),
        # The hostile gateway as the proxy: it answers CONNECT with a 404.
        env={"HTTPS_PROXY": "{base}", "https_proxy": "{base}", "NO_PROXY": "", "no_proxy": ""},
    ),
    StoreRow(
        "a signed URL with user info on a host that refuses connections",
        output("http://reader:" + USER_PASSWORD + "@127.0.0.1:{closed_port}/files/signed.png?" + SIGNED_QUERY),
        error=CometAPIConnectionError,
        message=("signed.png",),
    ),
    StoreRow(
        "a signed URL of another scheme",
        output("ftp://127.0.0.1/files/signed.png?" + SIGNED_QUERY),
        error=UnsupportedOutputURLError,
        message=("ftp",),
        no_retries=True,
    ),
    StoreRow(
        "a signed URL whose connection resets",
        output("{base}/files/signed.png?" + SIGNED_QUERY),
        {"signed.png": {"reset": True}},
        error=CometAPIConnectionError,
    ),
    StoreRow(
        'data_removed "false" is not true',
        output("{base}/files/ok.png", data_removed="false"),
        stored=("{id}_0.png", "{id}.json"),
    ),
]


def store(destination: Path) -> list[str]:
    operator = SavePredictionOutputsOperator(
        task_id="store", prediction_id=PREDICTION, destination=destination.as_uri()
    )
    return operator.execute({"ti": TaskInstance()})  # type: ignore[arg-type]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("row", STORE_ROWS, ids=[row.name for row in STORE_ROWS])
def test_hostile_output(
    row: StoreRow,
    gateway: HostileGateway,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd,
) -> None:
    connect(monkeypatch, gateway, **row.extra)
    port = closed_port()
    places = {
        "base": gateway.base_url,
        "tls": f"https://127.0.0.1:{gateway.port}",  # TLS to a port that speaks plain HTTP
        "tls_gateway": gateway.tls_base_url,  # the same gateway over TLS (trusted through {ca})
        "ca": gateway.ca_file,
        "closed": f"http://127.0.0.1:{port}",
        "closed_port": str(port),
        "tmp": str(tmp_path),
    }
    for name, value in row.env.items():
        monkeypatch.setenv(name, substituted(value, places))
    gateway.play({"get": substituted(row.get, places), "files": substituted(row.files, places)})
    destination = tmp_path / "airflow" / "images"
    for folder in (tmp_path / "dags", tmp_path / "outside"):  # where a traversal would land
        folder.mkdir()
    raised: BaseException | None = None
    started = time.monotonic()
    with caplog.at_level(logging.INFO), PeakMemory() as memory:
        try:
            store(destination)
        except Exception as error:
            raised = error
    elapsed = time.monotonic() - started
    stats = gateway.stats()
    captured = capfd.readouterr()
    logged = caplog.text + captured.out + captured.err
    assert_no_secret(*error_texts(raised), logged)
    assert_nothing_outside(tmp_path, destination)

    if row.error is None:
        assert raised is None, f"expected the outputs stored, got {raised!r}"
    else:
        assert isinstance(raised, row.error), f"expected {row.error.__name__}, got {raised!r}"
        for piece in row.message:
            assert piece in str(raised)
    if isinstance(raised, OutputTooLargeError):
        assert raised.limit == MAX_OUTPUT
        assert raised.size is None or raised.size > MAX_OUTPUT
        if "announced" in row.name:
            assert raised.size == 5 * MIB and mentions_size(str(raised), 5 * MIB), str(raised)
    if row.no_retries:
        assert "Retrying" not in logged, "a failure that cannot change must not be retried"
        assert not stats["files"], "nothing fetched from the file host"
    if row.fetched_once or row.fetched is not None:
        assert "Retrying" not in logged, "a failure that cannot change must not be retried"
        assert sum(stats["files"].values()) == (row.fetched or 1), f"the file host was asked {stats['files']}"
    if isinstance(raised, UnsupportedOutputURLError):
        assert raised.scheme in str(raised) and raised.scheme in ("file", "ftp", "http"), raised.scheme
    expected = {name.format(id=PREDICTION) for name in row.stored}
    found = {path.name for path in destination.iterdir()} if destination.exists() else set()
    assert found == expected, "only complete files at their final paths; no temporary file left"
    assert elapsed < row.deadline, f"{row.name}: took {elapsed:.1f}s, deadline {row.deadline}s"
    assert memory.growth_mib < row.memory_mib, f"{row.name}: peak memory grew {memory.growth_mib:.0f} MiB"
    assert stats["creates"] == 0


# --- A download killed mid-way, then run again -------------------------------------------------

KILLED_RUN = textwrap.dedent(
    """
    import sys
    from airflow_provider_cometapi.operators.storage import SavePredictionOutputsOperator
    class TaskInstance:
        def xcom_push(self, key, value):
            pass
    SavePredictionOutputsOperator(task_id="store", prediction_id=sys.argv[1], destination=sys.argv[2]).execute(
        {"ti": TaskInstance()}
    )
    """
)


def _written(directory: Path) -> bool:
    """Whether some file in ``directory`` has bytes in it."""
    for path in directory.iterdir():
        with contextlib.suppress(FileNotFoundError):  # renamed or removed meanwhile
            if path.stat().st_size > 0:
                return True
    return False


def test_a_killed_download_leaves_nothing_the_next_run_keeps(
    gateway: HostileGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker SIGKILLed mid-download leaves its temporary file; the next run removes or replaces it."""
    destination = tmp_path / "images"
    destination.mkdir()
    gateway.play({"files": {"ok.png": {"size": 8 * MIB, "stall_after": 256 * 1024, "content_type": "image/png"}}})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), *sys.path])}
    worker = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, PREDICTION, destination.as_uri()],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Killed once the stalled download has written some of what it got to its temporary file.
        # The worker imports Airflow first: on a loaded machine that alone took over 20 s.
        ends = time.monotonic() + 120
        while time.monotonic() < ends and worker.poll() is None and not _written(destination):
            time.sleep(0.05)
        assert worker.poll() is None, f"the worker ended (code {worker.returncode}) before it was killed"
        assert _written(destination), "no bytes of the download reached a temporary file within 120 s"
    finally:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
    left = [path.name for path in destination.iterdir()]
    assert left, "the killed run should have left its temporary file (the case under test)"
    assert not any(name.startswith(PREDICTION) and not name.startswith(".") for name in left), (
        f"a killed download left a file at a final path: {left}"
    )

    gateway.play({})  # ok.png is served whole now
    store(destination)
    assert sorted(path.name for path in destination.iterdir()) == sorted([f"{PREDICTION}_0.png", f"{PREDICTION}.json"])


def test_an_async_poll_redirected_to_plain_http_is_refused_even_when_the_target_answers(
    gateway: HostileGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    aiohttp follows a redirect from https to plain http itself; the hook must refuse what came back
    (here a 200 from the plain-http port, which without the refusal would be read as the answer).
    """
    set_connection(monkeypatch, {**gateway.connection_dict(KEY), "host": gateway.tls_base_url})
    gateway.play({"get": {"location": f"{gateway.base_url}/files/ok.png"}, "files": {"ok.png": {}}})

    async def poll() -> Prediction:
        async with CometAPIHook() as hook:
            return await hook.aget_prediction("hostile00001", deadline=time.time() + 20)

    with pytest.raises(UnsupportedOutputURLError, match="from https to plain http") as raised:
        asyncio.run(poll())
    assert "ok.png" in str(raised.value)
    assert gateway.stats()["gets"] == 1  # refused, not retried


def test_memory_measure_sees_a_big_allocation() -> None:
    """The bound above means something: 96 MiB held during the block shows as growth."""
    with PeakMemory() as memory:
        block = bytearray(96 * MIB)
        block[::4096] = b"x" * math.ceil(len(block) / 4096)
        del block
    assert memory.growth_mib > 80


# --- A gateway whose accept queue is full: the connect itself hangs ------------------------------


@pytest.fixture
def full_listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A base URL whose listener never accepts and whose accept queue is full: a connect to it hangs."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued: list[socket.socket] = []
    try:
        while True:  # fill the queue: the first connect that does not complete finds it full
            client = socket.socket()
            client.settimeout(0.2)
            queued.append(client)
            try:
                client.connect(("127.0.0.1", port))
            except OSError:
                break
            if len(queued) > 64:
                pytest.skip("the kernel kept accepting connections into the queue")
        base_url = f"http://127.0.0.1:{port}"
        set_connection(
            monkeypatch,
            {"conn_type": "cometapi", "host": base_url, "password": KEY, "extra": {"max_retries": 1}},
        )
        yield base_url
    finally:
        for client in queued:
            client.close()
        listener.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("place", ["worker", "triggerer"])
def test_a_hung_connect_does_not_outlive_the_deadline(full_listener: str, place: str) -> None:
    """The default connect timeout is 10 s; the wait's deadline, 1 s away, ends the call."""
    deadline = time.time() + 1.0
    started = time.monotonic()
    if place == "worker":
        hook = CometAPIHook()
        try:
            with pytest.raises(CometAPITimeoutError) as info:
                hook.get_prediction("hostile00001", deadline=deadline)
        finally:
            hook.close()
    else:

        async def poll() -> None:
            async with CometAPIHook() as hook:
                await hook.aget_prediction("hostile00001", deadline=deadline)

        with pytest.raises(CometAPITimeoutError) as info:
            asyncio.run(asyncio.wait_for(poll(), 30))
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"a hung connect held the call {elapsed:.1f}s past a 1 s deadline"
    assert_no_secret(*error_texts(info.value))
