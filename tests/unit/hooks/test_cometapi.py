"""CometAPIHook against the emulator over loopback: every answer the gateway can give."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest

from airflow_provider_cometapi.emulator import EmulatorProcess
from airflow_provider_cometapi.exceptions import (
    AuthenticationError,
    CometAPIConfigurationError,
    CometAPIConnectionError,
    CometAPITimeoutError,
    GatewayResponseError,
    InsufficientCreditError,
    InvalidInputError,
    InvalidModelIdError,
    InvalidPredictionIdError,
    ModelNotFoundError,
    PredictionNotFoundError,
    ServerError,
)
from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
from airflow_provider_cometapi.models import Prediction
from airflow_provider_cometapi.sessions import MAX_CONNECTIONS_PER_LOOP
from airflow_provider_cometapi.settings import USER_AGENT, base_url_of
from tests.fixtures import FAST_RETRIES, set_connection

SCHNELL = "black-forest-labs/flux-schnell"
PROMPT = {"prompt": "a lighthouse at dusk"}


def creates(emulator) -> int:
    return emulator.stats(detail=False)["creates"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Happy paths, sync and async ---------------------------------------------------------


def test_create_then_poll_until_succeeded(hook, cometapi_conn):
    prediction = hook.create_prediction(SCHNELL, PROMPT)
    assert prediction.status in ("starting", "processing")
    assert prediction.output == []
    deadline = time.time() + 10
    while not prediction.is_terminal and time.time() < deadline:
        time.sleep(0.1)
        prediction = hook.get_prediction(prediction.id)
    assert prediction.succeeded
    assert len(prediction.output) == 1
    assert prediction.output[0].startswith(cometapi_conn.base_url + "/files/")
    stats = cometapi_conn.stats()
    assert stats["creates"] == 1
    assert stats["predictions"][prediction.id]["prompt"] == PROMPT["prompt"]


async def test_async_create_get_and_cancel(async_hook, cometapi_conn):
    prediction = await async_hook.acreate_prediction(SCHNELL, {**PROMPT, "_emulator": {"duration": 30}})
    fetched = await async_hook.aget_prediction(prediction.id)
    assert fetched.id == prediction.id and not fetched.is_terminal
    canceled = await async_hook.acancel_prediction(prediction.id)
    assert canceled is not None and canceled.status == "canceled"
    assert (await async_hook.aget_prediction(prediction.id)).status == "canceled"
    assert cometapi_conn.stats()["cancels"] == 1


def test_string_output_models_are_normalised_to_a_list(hook):
    prediction = hook.create_prediction(
        "black-forest-labs/flux-1.1-pro", {**PROMPT, "_emulator": {"duration": 0}}, wait=5
    )
    assert prediction.succeeded
    assert isinstance(prediction.output, list) and len(prediction.output) == 1


def test_prefer_wait_returns_a_finished_prediction(hook, cometapi_conn):
    prediction = hook.create_prediction(SCHNELL, {**PROMPT, "_emulator": {"duration": 0.3}}, wait=10)
    assert prediction.succeeded
    assert creates(cometapi_conn) == 1


def test_prefer_wait_returns_the_incomplete_prediction_when_not_done(hook):
    started = time.monotonic()
    prediction = hook.create_prediction(SCHNELL, {**PROMPT, "_emulator": {"duration": 30}}, wait=1)
    assert prediction.status in ("starting", "processing")
    assert 0.9 <= time.monotonic() - started < 5


def test_model_id_with_version_is_kept_in_the_path(hook, cometapi_conn):
    prediction = hook.create_prediction(f"{SCHNELL}:5599ed30703defd1", PROMPT)
    assert prediction.model == SCHNELL
    assert cometapi_conn.stats()["predictions"][prediction.id]["model"] == SCHNELL


def test_cancel_not_supported_is_not_an_error(monkeypatch):
    with EmulatorProcess(extra_args=["--no-cancel"]) as emulator:
        set_connection(monkeypatch, emulator.connection_dict())
        hook = CometAPIHook(retry_policy=FAST_RETRIES)
        prediction = hook.create_prediction(SCHNELL, {**PROMPT, "_emulator": {"duration": 30}})
        assert hook.cancel_prediction(prediction.id) is None


def test_list_models_and_test_connection(hook):
    assert SCHNELL in hook.list_models()
    ok, message = hook.test_connection()
    assert ok, message
    assert "API key works" in message


def test_requests_carry_key_and_user_agent(hook):
    session = hook.get_conn()
    # The key goes with each API call, not on the session, so downloads from file hosts never carry it.
    assert "Authorization" not in session.headers
    assert hook.settings.headers["Authorization"] == f"Bearer {hook.settings.api_key}"
    assert session.headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("airflow-provider-cometapi/0.")
    assert "apache-airflow/3." in USER_AGENT


# --- Connection ------------------------------------------------------------------------


def test_connection_in_uri_form(emulator, monkeypatch):
    set_connection(monkeypatch, emulator.connection_uri())
    hook = CometAPIHook(retry_policy=FAST_RETRIES)
    assert hook.settings.base_url == emulator.base_url
    assert hook.test_connection()[0]


def test_connection_uri_with_bare_loopback_host_and_port(emulator, monkeypatch):
    set_connection(monkeypatch, f"cometapi://:{emulator.api_key}@127.0.0.1:{emulator.port}")
    hook = CometAPIHook(retry_policy=FAST_RETRIES)
    assert hook.settings.base_url == emulator.base_url
    assert hook.create_prediction(SCHNELL, PROMPT).id


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        (None, None, "https://api.cometapi.com"),
        ("http://127.0.0.1:9000", 0, "http://127.0.0.1:9000"),  # port 0 in the form: the Base URL's port
        ("", None, "https://api.cometapi.com"),
        ("api.cometapi.com", None, "https://api.cometapi.com"),
        ("https://gateway.example/prefix/", None, "https://gateway.example/prefix"),
        ("localhost", 8765, "http://localhost:8765"),
        ("http://127.0.0.1", 9000, "http://127.0.0.1:9000"),
        ("http://127.0.0.1:9000", 9000, "http://127.0.0.1:9000"),
        ("localhost.corp.example.com", None, "https://localhost.corp.example.com"),
        ("127.example.net", None, "https://127.example.net"),
        ("[::1]", 8765, "http://[::1]:8765"),
    ],
)
def test_base_url_of(host, port, expected):
    assert base_url_of(host, port) == expected


def test_missing_connection_says_how_to_create_it(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_COMETAPI_DEFAULT", raising=False)
    with pytest.raises(CometAPIConfigurationError, match="AIRFLOW_CONN_COMETAPI_DEFAULT"):
        _ = CometAPIHook().settings


def test_empty_key_is_refused_before_any_request(emulator, monkeypatch):
    set_connection(monkeypatch, {"conn_type": "cometapi", "host": emulator.base_url, "password": ""})
    with pytest.raises(CometAPIConfigurationError, match="no API key"):
        CometAPIHook().create_prediction(SCHNELL, PROMPT)
    assert emulator.stats(detail=False)["requests"] == 0


@pytest.mark.parametrize("value", ["many", -1, 99])
def test_bad_max_retries_fails_the_test_button_cleanly(emulator, monkeypatch, value):
    set_connection(monkeypatch, {**emulator.connection_dict(), "extra": {"max_retries": value}})
    ok, message = CometAPIHook().test_connection()
    assert not ok
    assert "'max_retries'" in message


def test_bad_timeout_extra_is_a_clear_error(emulator, monkeypatch):
    set_connection(monkeypatch, {**emulator.connection_dict(), "extra": {"timeout": "soon"}})
    with pytest.raises(CometAPIConfigurationError, match="'timeout'"):
        _ = CometAPIHook().settings


async def test_async_lookup_reads_the_same_settings(cometapi_conn):
    hook = CometAPIHook()
    settings = await hook.aget_settings()
    assert settings.base_url == cometapi_conn.base_url
    assert settings.api_key == cometapi_conn.api_key
    assert cometapi_conn.api_key not in repr(settings)


# --- What hooks on one event loop share ------------------------------------------------


async def test_hooks_on_one_loop_share_one_session_closed_by_the_last(cometapi_conn):
    first, second = CometAPIHook(), CometAPIHook()
    prediction = await first.acreate_prediction(SCHNELL, PROMPT)
    await second.aget_prediction(prediction.id)
    session = first._async_session
    assert session is not None and session is second._async_session
    assert session.connector.limit == MAX_CONNECTIONS_PER_LOOP
    # The key goes with each request, so one session serves every connection on the loop.
    assert "Authorization" not in session.headers
    await first.aclose()
    assert not session.closed  # the second hook still holds it
    await second.aclose()
    assert session.closed
    async with CometAPIHook() as third:  # a new session once the last one is gone
        await third.aget_prediction(prediction.id)
        assert third._async_session is not session


_REUSED_ACROSS_LOOPS = """
import asyncio, gc, os, sys, warnings
from airflow_provider_cometapi.hooks.cometapi import CometAPIHook

warnings.simplefilter("default")  # ResourceWarning and aiohttp's "Unclosed" notices are shown
hook = CometAPIHook()
for _ in range(3):
    asyncio.run(hook.aget_prediction(sys.argv[1]))
hook.close()
del hook
gc.collect()
print("polled three times")
"""


def test_a_hook_reused_across_event_loops_leaves_nothing_unclosed(cometapi_conn, tmp_path):
    import subprocess
    import sys

    prediction = CometAPIHook().create_prediction(SCHNELL, PROMPT)
    script = tmp_path / "reuse.py"
    script.write_text(_REUSED_ACROSS_LOOPS)
    done = subprocess.run(
        [sys.executable, str(script), prediction.id], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "polled three times" in done.stdout
    output = done.stdout + done.stderr
    assert "Unclosed" not in output and "unclosed" not in output, output


async def test_hooks_asking_together_share_one_connection_lookup(cometapi_conn, monkeypatch):
    lookups = 0
    original = CometAPIHook._lookup_settings

    async def counting(self):
        nonlocal lookups
        lookups += 1
        await asyncio.sleep(0.05)  # a round trip to the triggerer's supervisor
        return await original(self)

    monkeypatch.setattr(CometAPIHook, "_lookup_settings", counting)
    hooks = [CometAPIHook() for _ in range(50)]
    settings = await asyncio.gather(*(hook.aget_settings() for hook in hooks))
    assert lookups == 1
    assert all(s == settings[0] for s in settings)
    assert settings[0].api_key == cometapi_conn.api_key
    await CometAPIHook("cometapi_default").aget_settings()  # asked for again soon after: reused
    assert lookups == 1


async def test_a_failed_lookup_is_not_reused(cometapi_conn, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_COMETAPI_DEFAULT")
    with pytest.raises(CometAPIConfigurationError, match="does not exist"):
        await CometAPIHook().aget_settings()
    set_connection(monkeypatch, cometapi_conn.connection_dict())
    assert (await CometAPIHook().aget_settings()).base_url == cometapi_conn.base_url


async def test_a_cancelled_hook_does_not_cancel_the_lookup_others_wait_for(cometapi_conn, monkeypatch):
    original = CometAPIHook._lookup_settings

    async def slow(self):
        await asyncio.sleep(0.1)
        return await original(self)

    monkeypatch.setattr(CometAPIHook, "_lookup_settings", slow)
    cancelled = asyncio.ensure_future(CometAPIHook().aget_settings())
    waiting = asyncio.ensure_future(CometAPIHook().aget_settings())
    await asyncio.sleep(0.01)
    cancelled.cancel()
    assert (await waiting).api_key == cometapi_conn.api_key


# --- Errors ----------------------------------------------------------------------------


def test_wrong_key(emulator, monkeypatch):
    set_connection(monkeypatch, {**emulator.connection_dict(), "password": "wrong-key-12345"})
    hook = CometAPIHook(retry_policy=FAST_RETRIES)
    with pytest.raises(AuthenticationError, match="cometapi_default") as info:
        hook.get_prediction("abc")
    assert "wrong-key-12345" not in str(info.value)
    ok, message = hook.test_connection()
    assert not ok and "rejected the API key" in message
    # The Test button tests a copy under a temporary id: its messages name no id.
    assert "of the connection;" in message and "cometapi_default" not in message
    assert emulator.stats(detail=False)["requests"] == 2  # 401 is never retried


def test_unreachable_host(monkeypatch):
    set_connection(
        monkeypatch, {"conn_type": "cometapi", "password": "k-123456", "host": f"http://127.0.0.1:{free_port()}"}
    )
    ok, message = CometAPIHook().test_connection()
    assert not ok
    assert "Could not reach CometAPI" in message and "'Base URL' of the connection" in message


def test_unknown_model(hook, cometapi_conn):
    with pytest.raises(ModelNotFoundError, match="black-forest-labs/flux-nonexistent"):
        hook.create_prediction("black-forest-labs/flux-nonexistent", PROMPT)
    assert creates(cometapi_conn) == 0


@pytest.mark.parametrize(
    ("model_id", "prediction_id"), [("noslash", "a/b"), ("", ""), ("a b/c", "a b"), ("a/b/c", "../x")]
)
def test_malformed_ids_are_rejected_before_any_request(hook, cometapi_conn, model_id, prediction_id):
    with pytest.raises(InvalidModelIdError):
        hook.create_prediction(model_id, PROMPT)
    with pytest.raises(InvalidPredictionIdError):
        hook.get_prediction(prediction_id)
    with pytest.raises(InvalidPredictionIdError):
        hook.cancel_prediction(prediction_id)
    assert cometapi_conn.stats(detail=False)["requests"] == 0


def test_unknown_prediction(hook):
    with pytest.raises(PredictionNotFoundError, match="doesnotexist"):
        hook.get_prediction("doesnotexist")


def test_invalid_input_is_caught_locally(hook, cometapi_conn):
    with pytest.raises(InvalidInputError, match="input.aspect_ratio"):
        hook.create_prediction(SCHNELL, {**PROMPT, "aspect_ratio": "7:3"})
    assert cometapi_conn.stats(detail=False)["requests"] == 0


def test_server_422_lists_the_fields(hook):
    from airflow_provider_cometapi.api import create_prediction_request

    # Bypass the local check to see how the server's own 422 reads.
    request = create_prediction_request(SCHNELL, {"prompt": "", "output_quality": 500}, wait=None)
    with pytest.raises(InvalidInputError) as info:
        hook._call(request)
    assert {f["field"] for f in info.value.invalid_fields} == {"input.prompt", "input.output_quality"}
    assert info.value.http_status == 422


def test_no_credit(hook, cometapi_conn):
    cometapi_conn.add_fault(kind="error", route="create", status=402, envelope="openai", message="Insufficient credit")
    with pytest.raises(InsufficientCreditError, match="Insufficient credit"):
        hook.create_prediction(SCHNELL, PROMPT)
    assert creates(cometapi_conn) == 0


# --- Retries of idempotent calls ---------------------------------------------------------


@pytest.fixture
def prediction_id(hook):
    return hook.create_prediction(SCHNELL, {**PROMPT, "_emulator": {"duration": 30}}).id


def test_get_honours_retry_after_header(hook, cometapi_conn, prediction_id):
    cometapi_conn.add_fault(kind="throttle", route="get", count=2, retry_after=0.4, body=False)
    started = time.monotonic()
    assert hook.get_prediction(prediction_id).id == prediction_id
    assert time.monotonic() - started >= 0.8
    assert cometapi_conn.stats(detail=False)["faults_served"] == 2


def test_get_honours_retry_after_in_body(hook, cometapi_conn, prediction_id):
    cometapi_conn.add_fault(kind="throttle", route="get", count=1, retry_after=0.5, header=False)
    started = time.monotonic()
    hook.get_prediction(prediction_id)
    assert time.monotonic() - started >= 0.5


@pytest.mark.parametrize("status", [500, 502, 503, 524])
def test_get_survives_a_burst_of_html_errors_shorter_than_the_budget(hook, cometapi_conn, prediction_id, status):
    cometapi_conn.add_fault(kind="server_error", route="get", count=3, status=status)
    assert hook.get_prediction(prediction_id).id == prediction_id


def test_get_fails_clearly_when_the_burst_outlasts_the_budget(hook, cometapi_conn, prediction_id):
    cometapi_conn.add_fault(kind="server_error", route="get", count=10, status=502)
    with pytest.raises(GatewayResponseError, match="HTTP 502"):
        hook.get_prediction(prediction_id)
    assert cometapi_conn.stats(detail=False)["faults_served"] == FAST_RETRIES.max_attempts


def test_get_retries_resets_and_malformed_json(hook, cometapi_conn, prediction_id):
    cometapi_conn.add_fault(kind="reset", route="get", count=1)
    cometapi_conn.add_fault(kind="malformed_json", route="get", count=1)
    assert hook.get_prediction(prediction_id).id == prediction_id


def test_get_retries_a_read_timeout(emulator, monkeypatch, prediction_id_factory):
    set_connection(monkeypatch, {**emulator.connection_dict(), "extra": {"timeout": 0.3}})
    hook = CometAPIHook(retry_policy=FAST_RETRIES)
    prediction_id = prediction_id_factory(hook)
    emulator.add_fault(kind="slow", route="get", count=1, delay=1.0)
    assert hook.get_prediction(prediction_id).id == prediction_id
    emulator.add_fault(kind="slow", route="get", count=-1, delay=1.0)
    with pytest.raises(CometAPITimeoutError, match="did not answer"):
        hook.get_prediction(prediction_id)


async def test_async_get_retries_the_same_way(async_hook, cometapi_conn):
    prediction = await async_hook.acreate_prediction(SCHNELL, {**PROMPT, "_emulator": {"duration": 30}})
    cometapi_conn.add_fault(kind="throttle", route="get", count=1, retry_after=0.2)
    cometapi_conn.add_fault(kind="server_error", route="get", count=1, status=524)
    cometapi_conn.add_fault(kind="reset", route="get", count=1)
    assert (await async_hook.aget_prediction(prediction.id)).id == prediction.id
    assert cometapi_conn.stats(detail=False)["faults_served"] == 3
    cometapi_conn.add_fault(kind="server_error", route="get", count=-1)
    with pytest.raises(ServerError):
        await async_hook.aget_prediction(prediction.id)


# --- Creation is never repeated after an ambiguous failure -------------------------------


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"kind": "server_error", "status": 502}, GatewayResponseError),
        ({"kind": "reset"}, CometAPIConnectionError),
        ({"kind": "malformed_json"}, GatewayResponseError),
    ],
)
@pytest.mark.parametrize("use_async", [False, True])
def test_create_is_not_repeated_after_an_ambiguous_failure(hook, cometapi_conn, fault, error, use_async):
    cometapi_conn.add_fault(route="create", after_create=True, count=-1, **fault)
    with pytest.raises(error) as info:
        if use_async:

            async def create():
                async with CometAPIHook(retry_policy=FAST_RETRIES) as async_hook:
                    await async_hook.acreate_prediction(SCHNELL, PROMPT)

            asyncio.run(create())
        else:
            hook.create_prediction(SCHNELL, PROMPT)
    assert creates(cometapi_conn) == 1
    if isinstance(info.value, CometAPIConnectionError):
        assert "not created again" in str(info.value)


def test_create_is_not_repeated_after_a_timeout(emulator, monkeypatch):
    set_connection(monkeypatch, {**emulator.connection_dict(), "extra": {"timeout": 0.3}})
    emulator.add_fault(kind="slow", route="create", after_create=True, delay=1.5)
    with pytest.raises(CometAPITimeoutError, match="not created again"):
        CometAPIHook(retry_policy=FAST_RETRIES).create_prediction(SCHNELL, PROMPT)
    assert creates(emulator) == 1


def test_create_is_retried_when_throttled(hook, cometapi_conn):
    cometapi_conn.add_fault(kind="throttle", route="create", count=2, retry_after=0.1)
    prediction = hook.create_prediction(SCHNELL, PROMPT)
    assert creates(cometapi_conn) == 1
    assert cometapi_conn.stats()["predictions"].keys() == {prediction.id}


@pytest.mark.parametrize("use_async", [False, True])
def test_create_is_retried_when_the_connection_is_refused(monkeypatch, caplog, capsys, use_async):
    set_connection(
        monkeypatch, {"conn_type": "cometapi", "password": "k-123456", "host": f"http://127.0.0.1:{free_port()}"}
    )
    hook = CometAPIHook(retry_policy=FAST_RETRIES)
    with caplog.at_level(logging.WARNING), pytest.raises(CometAPIConnectionError) as info:
        if use_async:
            asyncio.run(hook.acreate_prediction(SCHNELL, PROMPT))
        else:
            hook.create_prediction(SCHNELL, PROMPT)
    assert info.value.nothing_created
    logged = caplog.text + capsys.readouterr().out  # Airflow's structlog writes to stdout
    assert logged.count("Retrying in") == FAST_RETRIES.max_attempts - 1


# --- Secrets ---------------------------------------------------------------------------


def test_the_key_never_reaches_the_logs(emulator, monkeypatch, caplog, capsys):
    key = "sk-super-secret-value-123"
    set_connection(monkeypatch, {**emulator.connection_dict(), "password": key})
    with caplog.at_level(logging.DEBUG):
        hook = CometAPIHook(retry_policy=FAST_RETRIES)
        for call in (lambda: hook.get_prediction("abc"), hook.test_connection, lambda: repr(hook.settings)):
            try:
                call()
            except Exception as error:
                assert key not in str(error)
    captured = capsys.readouterr()
    assert key not in caplog.text + captured.out + captured.err


@pytest.fixture
def prediction_id_factory():
    def create(hook: CometAPIHook) -> str:
        return hook.create_prediction(SCHNELL, {**PROMPT, "_emulator": {"duration": 30}}).id

    return create


def test_prediction_model_roundtrip(hook):
    prediction = hook.create_prediction(SCHNELL, {**PROMPT, "_emulator": {"duration": 0}}, wait=5)
    # The log is kept beside ``raw``, not in it (it can be large).
    assert "logs" not in prediction.raw and prediction.logs
    assert Prediction.from_api({**prediction.raw, "logs": prediction.logs}) == prediction


def test_test_connection_names_the_base_url_without_user_info(monkeypatch):
    """The Test button's success message shows the Base URL as every message does: no user info."""
    from tests.reliability.hostile_gateway import HostileGateway

    with HostileGateway(lifetime=60) as gateway:  # it answers GET /v1/models whatever the credentials
        base_url = f"http://reader:hunter2-userinfo@127.0.0.1:{gateway.port}"
        set_connection(monkeypatch, {"conn_type": "cometapi", "host": base_url, "password": "sk-test-key"})
        ok, message = CometAPIHook().test_connection()
    assert ok, message
    assert message.startswith(f"Connected to http://127.0.0.1:{gateway.port}: the API key works")
    assert "hunter2-userinfo" not in message and "reader" not in message
