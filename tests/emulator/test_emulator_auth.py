"""Who may call what: control routes take the key (or the control token); files take their URL's token."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
import requests
from aiohttp.test_utils import TestClient, TestServer

from airflow_provider_cometapi.emulator import EmulatorConfig, EmulatorProcess, create_app
from airflow_provider_cometapi.emulator.server import STORE_KEY

from .helpers import Api, file_token

if TYPE_CHECKING:
    from collections.abc import Iterator


def control_routes() -> list[tuple[str, str]]:
    """Every ``/_emulator/`` route the application has, so a new one cannot slip by unguarded."""
    app = create_app(EmulatorConfig())
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.resource.canonical.startswith("/_emulator/")
    }
    assert len(routes) >= 7
    return sorted(routes)


# A body each route accepts, so "with the key" shows the route really works.
_BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/_emulator/faults"): {"kind": "throttle", "route": "models"},
    ("POST", "/_emulator/outage"): {"seconds": "not a number"},  # a 400 from the route itself
    ("POST", "/_emulator/create-limit"): {"per_minute": None},  # no limit, as it already is
}
_ANSWERS: dict[tuple[str, str], int] = {("POST", "/_emulator/faults"): 201, ("POST", "/_emulator/outage"): 400}


@pytest.mark.parametrize(("method", "path"), control_routes())
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-key", "Basic dGVzdC1rZXk6", "test-key", "Bearer ", "Bearer test-key-and-more"],
)
def test_control_route_without_the_key_is_401(
    emulator: EmulatorProcess, method: str, path: str, authorization: str | None
) -> None:
    emulator.add_fault(kind="throttle", route="models")
    headers = {"Authorization": authorization} if authorization is not None else {}
    resp = requests.request(
        method, emulator.base_url + path, json=_BODIES.get((method, path)), headers=headers, timeout=10
    )
    assert resp.status_code == 401, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    error = resp.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert "API key" in error["message"]
    assert len(emulator.faults()) == 1  # nothing was reset, cleared or added
    assert emulator.running  # nor taken offline


@pytest.mark.parametrize(("method", "path"), control_routes())
def test_control_route_with_the_key_works(emulator: EmulatorProcess, method: str, path: str) -> None:
    resp = requests.request(
        method,
        emulator.base_url + path,
        json=_BODIES.get((method, path)),
        headers={"Authorization": f"bearer  {emulator.api_key} "},  # scheme in any case, spaces around
        timeout=10,
    )
    assert resp.status_code == _ANSWERS.get((method, path), 200), resp.text
    assert resp.headers["Content-Type"].startswith("application/json")


@pytest.fixture(scope="module")
def token_emulator() -> Iterator[EmulatorProcess]:
    with EmulatorProcess(api_key="api-key-1", control_token="control-token-1") as proc:
        yield proc


def test_a_control_token_replaces_the_key_on_control_routes(token_emulator: EmulatorProcess) -> None:
    url = token_emulator.base_url + "/_emulator/stats"
    with_key = requests.get(url, headers={"Authorization": "Bearer api-key-1"}, timeout=10)
    assert with_key.status_code == 401
    assert with_key.json()["error"]["code"] == "invalid_control_token"
    assert "control token" in with_key.json()["error"]["message"]
    assert token_emulator.stats()["creates"] == 0  # EmulatorProcess sends the token
    token_emulator.reset()
    assert token_emulator.control_headers() == {"Authorization": "Bearer control-token-1"}


def test_the_control_token_is_not_an_api_key(token_emulator: EmulatorProcess) -> None:
    api = Api(token_emulator)
    assert api.models().status_code == 200
    api.session.headers["Authorization"] = "Bearer control-token-1"
    assert api.models().status_code == 401
    assert api.create().status_code == 401


def test_the_config_route_tells_whether_a_control_token_is_set(token_emulator: EmulatorProcess) -> None:
    url = token_emulator.base_url + "/_emulator/config"
    config = requests.get(url, headers=token_emulator.control_headers(), timeout=10).json()
    assert config["control_token"] is True
    assert "control-token-1" not in str(config)


def test_an_empty_control_token_is_refused() -> None:
    with pytest.raises(ValueError, match="control_token"):
        EmulatorConfig(control_token="")


# -- output files: public like a CDN's, but only under their unguessable URL ------------------


def test_output_files_need_no_key_but_their_token(api: Api) -> None:
    p = api.create_ok(num_outputs=2, control={"duration": 0})
    first, second = p["output"]
    assert file_token(first) == file_token(second)
    assert len(file_token(first)) >= 20
    assert p["id"] not in file_token(first)
    assert requests.get(first, timeout=10).status_code == 200  # no Authorization header
    other = api.create_ok(control={"duration": 0})
    assert file_token(other["output"][0]) != file_token(first)
    swapped = first.replace(p["id"], other["id"])  # a known id with another prediction's token
    assert requests.get(swapped, timeout=10).status_code == 404


def _in_process(check: Any) -> None:
    """Run ``check(client, store)`` against the application on loopback, to see the file tokens."""

    async def run() -> None:
        async with TestClient(TestServer(create_app(EmulatorConfig(api_key="k")))) as client:
            await check(client, client.app[STORE_KEY])

    asyncio.run(run())


@pytest.mark.parametrize("control", [{"duration": 30}, {"duration": 0, "outcome": "failed"}])
def test_no_file_before_success_even_with_the_token(control: dict[str, Any]) -> None:
    async def check(client: TestClient, store: Any) -> None:
        resp = await client.post(
            "/replicate/v1/models/black-forest-labs/flux-schnell/predictions",
            json={"input": {"prompt": "a fox", "_emulator": control}},
            headers={"Authorization": "Bearer k"},
        )
        assert resp.status == 201
        pid = (await resp.json())["id"]
        token = store.predictions[pid].file_token
        got = await client.get(f"/files/{pid}/{token}/out-0.webp")
        assert got.status == 404

    _in_process(check)
