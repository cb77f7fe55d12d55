"""Server-level fault injection: every kind, routes, counts, ordering and ``after_create``."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pytest
import requests

from airflow_provider_cometapi.emulator.testing import EmulatorError, EmulatorProcess

from .helpers import Api

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


def test_throttle_defaults(api: Api) -> None:
    api.emu.add_fault(kind="throttle")
    resp = api.create()
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "1"
    body = resp.json()
    assert body["status"] == 429
    assert body["retry_after"] == 1
    assert body["title"]
    assert body["detail"]
    # count defaults to 1: the next request goes through.
    assert api.create().status_code == 201
    stats = api.emu.stats(detail=False)
    assert stats["faults_served"] == 1
    assert stats["creates"] == 1


@pytest.mark.parametrize(
    ("options", "header", "body_value"),
    [
        ({"retry_after": 0.2}, "0.2", 0.2),
        ({"retry_after": 3, "header": False}, None, 3),
        ({"retry_after": 2, "body": False}, "2", None),
        ({"message": "Slow down"}, "1", 1),
    ],
)
def test_throttle_options(api: Api, options: dict[str, Any], header: str | None, body_value: float | None) -> None:
    api.emu.add_fault(kind="throttle", route="get", **options)
    resp = api.get("anything")
    assert resp.status_code == 429
    assert resp.headers.get("Retry-After") == header
    assert resp.json().get("retry_after") == body_value
    assert resp.json()["detail"] == options.get("message", resp.json()["detail"])


def test_count_and_route(api: Api) -> None:
    api.emu.add_fault(kind="throttle", route="create", count=2)
    assert [api.create().status_code for _ in range(3)] == [429, 429, 201]
    # Other routes were never affected.
    api.emu.add_fault(kind="throttle", route="create", count=1)
    assert api.models().status_code == 200
    assert api.create().status_code == 429


def test_count_minus_one_lasts_until_cleared(api: Api) -> None:
    api.emu.add_fault(kind="server_error", route="models", count=-1)
    assert [api.models().status_code for _ in range(4)] == [502] * 4
    api.emu.clear_faults()
    assert api.models().status_code == 200
    assert api.emu.stats(detail=False)["faults_served"] == 4


def test_rules_are_consumed_in_order(api: Api) -> None:
    api.emu.add_fault(kind="error", status=402, route="any")
    api.emu.add_fault(kind="throttle", route="any")
    assert api.models().status_code == 402
    assert api.models().status_code == 429
    assert api.models().status_code == 200
    assert [r["served"] for r in api.emu.faults()] == [1, 1]


@pytest.mark.parametrize("route", ["create", "get", "cancel", "models", "files"])
def test_each_route_can_be_targeted(api: Api, route: str) -> None:
    done = api.create_ok(control={"duration": 0})
    api.emu.add_fault(kind="error", status=418, route=route, envelope="replicate")
    calls: dict[str, Callable[[], requests.Response]] = {
        "create": lambda: api.create(),
        "get": lambda: api.get(done["id"]),
        "cancel": lambda: api.cancel(done["id"]),
        "models": lambda: api.models(),
        "files": lambda: requests.get(done["output"][0], timeout=10),
    }
    for name, call in calls.items():
        expected = 418 if name == route else None
        status = call().status_code
        if expected:
            assert status == 418, name
        else:
            assert status in (200, 201), name


@pytest.mark.parametrize("status", [500, 502, 503, 524])
def test_server_error_html_page(api: Api, status: int) -> None:
    api.emu.add_fault(kind="server_error", status=status)
    resp = api.get("x")
    assert resp.status_code == status
    assert resp.headers["Content-Type"].startswith("text/html")
    assert f"<title>{status} " in resp.text
    with pytest.raises(ValueError, match="Expecting value"):
        resp.json()
    if status == 524:
        assert resp.reason == "A Timeout Occurred"


def test_server_error_as_problem_json(api: Api) -> None:
    api.emu.add_fault(kind="server_error", status=503, html=False)
    resp = api.models()
    assert resp.status_code == 503
    assert resp.json()["status"] == 503


@pytest.mark.parametrize(
    ("envelope", "check"),
    [
        ("replicate", lambda r: r.json()["detail"] == "Insufficient credit" and r.json()["status"] == 402),
        ("openai", lambda r: r.json()["error"]["message"] == "Insufficient credit"),
        ("html", lambda r: r.headers["Content-Type"].startswith("text/html") and "Insufficient credit" in r.text),
    ],
)
def test_error_envelopes(api: Api, envelope: str, check: Any) -> None:
    api.emu.add_fault(kind="error", status=402, envelope=envelope, message="Insufficient credit")
    resp = api.create()
    assert resp.status_code == 402
    assert check(resp)
    assert api.emu.stats(detail=False)["creates"] == 0


def test_error_openai_type_and_code(api: Api) -> None:
    api.emu.add_fault(kind="error", status=403, envelope="openai", type="forbidden", code="model_not_allowed")
    error = api.models().json()["error"]
    assert error["type"] == "forbidden"
    assert error["code"] == "model_not_allowed"


def test_slow_answers_normally_after_the_delay(api: Api) -> None:
    api.emu.add_fault(kind="slow", delay=0.5, route="models")
    started = time.monotonic()
    resp = api.models()
    assert time.monotonic() - started >= 0.45
    assert resp.status_code == 200
    assert api.emu.stats(detail=False)["faults_served"] == 1


BROKEN = (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)


def test_slow_create_still_creates_when_the_client_gives_up(api: Api) -> None:
    api.emu.add_fault(kind="slow", delay=0.5, route="create")
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.session.post(
            f"{api.base}/replicate/v1/models/black-forest-labs/flux-schnell/predictions",
            json={"input": {"prompt": "timed out"}},
            timeout=0.1,
        )
    deadline = time.monotonic() + 5
    while api.emu.stats(detail=False)["creates"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p["prompt"] for p in api.emu.stats()["predictions"].values()] == ["timed out"]
    assert "Traceback" not in api.emu.stderr_text()


@pytest.mark.parametrize(
    ("partial", "error"),
    [(True, requests.exceptions.ChunkedEncodingError), (False, requests.exceptions.ConnectionError)],
)
def test_reset_drops_the_connection(api: Api, partial: bool, error: type[Exception]) -> None:
    api.emu.add_fault(kind="reset", route="get", partial=partial)
    with pytest.raises(error):
        api.get("anything")
    # The server is fine afterwards.
    assert api.models().status_code == 200


def test_malformed_json(api: Api) -> None:
    api.emu.add_fault(kind="malformed_json", route="models")
    resp = api.models()
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    with pytest.raises(ValueError, match=r"."):
        json.loads(resp.text)


def test_auth_is_checked_before_faults(emulator: EmulatorProcess) -> None:
    emulator.add_fault(kind="throttle")
    resp = requests.get(emulator.base_url + "/v1/models", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert resp.status_code == 401
    assert emulator.faults()[0]["served"] == 0


def test_control_routes_are_never_faulted(emulator: EmulatorProcess) -> None:
    emulator.add_fault(kind="server_error", count=-1)
    assert emulator.stats(detail=False)["faults_served"] == 0


# -- after_create: the prediction exists although the client saw a failure --------------------


def _failure_of(api: Api) -> str:
    try:
        resp = api.create(prompt="ambiguous")
    except BROKEN:
        return "connection"
    if resp.status_code >= 500:
        return f"http {resp.status_code}"
    try:
        resp.json()
    except ValueError:
        return "bad json"
    return "ok"


@pytest.mark.parametrize(
    ("rule", "failure"),
    [
        ({"kind": "server_error", "status": 524}, "http 524"),
        ({"kind": "server_error", "status": 502, "html": False}, "http 502"),
        ({"kind": "reset"}, "connection"),
        ({"kind": "reset", "partial": False}, "connection"),
        ({"kind": "malformed_json"}, "bad json"),
    ],
)
def test_after_create_creates_then_fails(api: Api, rule: dict[str, Any], failure: str) -> None:
    api.emu.add_fault(route="create", after_create=True, **rule)
    assert _failure_of(api) == failure
    stats = api.emu.stats()
    assert stats["creates"] == 1
    assert stats["faults_served"] == 1
    [(pid, entry)] = stats["predictions"].items()
    assert entry["prompt"] == "ambiguous"
    assert api.get_ok(pid)["id"] == pid


def test_after_create_malformed_json_is_the_truncated_prediction(api: Api) -> None:
    api.emu.add_fault(kind="malformed_json", route="create", after_create=True)
    text = api.create(prompt="truncated").text
    [pid] = api.emu.stats()["predictions"]
    assert text.startswith('{"id":"' + pid)


def test_after_create_slow(api: Api) -> None:
    api.emu.add_fault(kind="slow", delay=0.4, route="create", after_create=True)
    started = time.monotonic()
    resp = api.create()
    assert time.monotonic() - started >= 0.35
    assert resp.status_code == 201
    assert api.emu.stats(detail=False)["creates"] == 1


def test_after_create_waits_for_a_create_that_succeeds(api: Api) -> None:
    api.emu.add_fault(kind="server_error", route="create", after_create=True)
    assert api.models().status_code == 200  # other routes never consume it
    assert api.create(prompt="").status_code == 422  # nothing created: not consumed either
    assert api.create().status_code == 502
    assert api.create().status_code == 201
    assert api.emu.stats(detail=False)["creates"] == 2


@pytest.mark.parametrize(
    "rule",
    [
        {},
        {"kind": "explode"},
        {"kind": "throttle", "route": "upload"},
        {"kind": "throttle", "count": 0},
        {"kind": "throttle", "count": "2"},
        {"kind": "throttle", "retry_after": -1},
        {"kind": "throttle", "header": "yes"},
        {"kind": "throttle", "delay": 1},
        {"kind": "throttle", "after_create": True},
        {"kind": "reset", "route": "get", "after_create": True},
        {"kind": "server_error", "status": 404},
        {"kind": "error", "status": 200},
        {"kind": "error", "status": 400, "envelope": "soap"},
        {"kind": "slow", "delay": "long"},
    ],
)
def test_invalid_rules_are_rejected(emulator: EmulatorProcess, rule: dict[str, Any]) -> None:
    with pytest.raises(EmulatorError, match="400"):
        emulator.add_fault(**rule)
    assert emulator.faults() == []


def test_add_fault_answers_201_with_the_normalised_rule(emulator: EmulatorProcess) -> None:
    auth = emulator.control_headers()
    resp = requests.post(emulator.base_url + "/_emulator/faults", json={"kind": "throttle"}, headers=auth, timeout=10)
    assert resp.status_code == 201
    assert resp.json()["rule"] == {
        "kind": "throttle",
        "route": "any",
        "count": 1,
        "served": 0,
        "retry_after": 1.0,
        "header": True,
        "body": True,
    }
    assert requests.delete(emulator.base_url + "/_emulator/faults", headers=auth, timeout=10).json() == {"cleared": 1}


# -- --fault on the command line -------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_faulted() -> Iterator[EmulatorProcess]:
    rules = [{"kind": "throttle", "route": "models", "count": 2, "retry_after": 0.5}, {"kind": "slow", "delay": 0.01}]
    args: list[str] = []
    for rule in rules:
        args += ["--fault", json.dumps(rule)]
    with EmulatorProcess(extra_args=args) as proc:
        yield proc


def test_cli_fault_rules_are_installed(cli_faulted: EmulatorProcess) -> None:
    api = Api(cli_faulted)
    assert [api.models().status_code for _ in range(3)] == [429, 429, 200]
    assert [r["kind"] for r in cli_faulted.faults()] == ["throttle", "slow"]


def test_cli_rejects_an_invalid_fault() -> None:
    proc = EmulatorProcess(extra_args=["--fault", '{"kind": "explode"}'], startup_timeout=20)
    with pytest.raises(EmulatorError, match="invalid fault rule") as info:
        proc.start()
    assert "exited with code 2" in str(info.value)
    assert not proc.running
    proc.close()
