"""Bodies the emulator cannot use get a 400 or 413 in JSON, never a 500 or a traceback."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import requests

from airflow_provider_cometapi.emulator.bodies import MAX_DEPTH, BodyError, parse_json
from airflow_provider_cometapi.emulator.testing import EmulatorProcess

from .helpers import SCHNELL

if TYPE_CHECKING:
    from collections.abc import Iterator

CREATE = f"/replicate/v1/models/{SCHNELL}/predictions"


def nested(depth: int) -> bytes:
    return b'{"input": {"prompt": "x", "deep": ' + b"[" * depth + b"]" * depth + b"}}"


MALFORMED: dict[str, bytes] = {
    "nested 30,000 deep": b"[" * 30_000 + b"]" * 30_000,
    "nested inside the input": nested(5_000),
    "just past the depth bound": nested(MAX_DEPTH),
    "not JSON": b"{not json",
    "truncated": b'{"input": {"prompt": "x"',
    "not UTF-8": b'{"input": {"prompt": "\xff\xfe"}}',
    "NaN": b'{"input": {"prompt": "x", "seed": NaN}}',
    "Infinity": b'{"input": {"prompt": "x", "guidance": -Infinity}}',
    "a float out of range": b'{"input": {"prompt": "x", "guidance": 1e999}}',
    "a 5,000-digit integer": b'{"input": {"prompt": "x", "seed": ' + b"9" * 5_000 + b"}}",
}


@pytest.fixture(scope="module")
def small_bodies() -> Iterator[EmulatorProcess]:
    """Its own process, so its stderr holds only what these tests caused."""
    with EmulatorProcess(extra_args=["--max-request-bytes", "65536", "--max-stored-bytes", "65536"]) as proc:
        yield proc


def post(emu: EmulatorProcess, path: str, data: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(
        emu.base_url + path, data=data, headers={"Content-Type": "application/json", **headers}, timeout=30
    )


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_create_body_is_400(small_bodies: EmulatorProcess, data: bytes) -> None:
    resp = post(small_bodies, CREATE, data, {"Authorization": f"Bearer {small_bodies.api_key}"})
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["status"] == 400
    assert body["title"] == "Invalid JSON"
    assert "Traceback" not in small_bodies.stderr_text()
    assert small_bodies.stats(detail=False)["creates"] == 0


def test_a_million_levels_deep_is_400_under_the_default_bounds(emulator: EmulatorProcess) -> None:
    data = b'{"input": {"prompt": "x", "deep": ' + b"[" * 1_000_000 + b"}}"
    resp = post(emulator, CREATE, data, {"Authorization": f"Bearer {emulator.api_key}"})
    assert resp.status_code == 400, resp.text
    assert "Traceback" not in emulator.stderr_text()


@pytest.mark.parametrize("path", ["/_emulator/faults", "/_emulator/outage"])
@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_control_body_is_400(small_bodies: EmulatorProcess, path: str, data: bytes) -> None:
    resp = post(small_bodies, path, data, small_bodies.control_headers())
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]
    assert small_bodies.faults() == []
    assert "Traceback" not in small_bodies.stderr_text()


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/_emulator/faults", b"[]"),
        ("/_emulator/faults", b'"throttle"'),
        ("/_emulator/faults", b'{"kind": ["throttle"]}'),
        ("/_emulator/faults", b'{"kind": "slow", "delay": "1"}'),
        ("/_emulator/faults", b""),
        ("/_emulator/outage", b"[1]"),
        ("/_emulator/outage", b'{"seconds": true}'),
        ("/_emulator/outage", b'{"seconds": [1]}'),
        ("/_emulator/outage", b'{"seconds": null}'),
        ("/_emulator/outage", b""),
    ],
)
def test_control_bodies_of_the_wrong_type_are_400(small_bodies: EmulatorProcess, path: str, data: bytes) -> None:
    resp = post(small_bodies, path, data, small_bodies.control_headers())
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]
    assert small_bodies.running
    assert "Traceback" not in small_bodies.stderr_text()


@pytest.mark.parametrize(
    "data",
    [
        b"null",
        b"42",
        b'"a fox"',
        b'{"input": null}',
        b'{"input": {"prompt": ["a fox"]}}',
        b'{"input": {"prompt": "x", "aspect_ratio": {"w": 16}}}',
        b'{"input": {"prompt": "x", "num_outputs": 2.5}}',
        b'{"input": {"prompt": "x", "_emulator": {"duration": [1]}}}',
    ],
)
def test_wrong_types_are_422(small_bodies: EmulatorProcess, data: bytes) -> None:
    resp = post(small_bodies, CREATE, data, {"Authorization": f"Bearer {small_bodies.api_key}"})
    assert resp.status_code == 422, resp.text
    assert resp.json()["invalid_fields"]
    assert "Traceback" not in small_bodies.stderr_text()


def test_model_ref_of_the_wrong_type_is_422(small_bodies: EmulatorProcess) -> None:
    headers = {"Authorization": f"Bearer {small_bodies.api_key}"}
    for model in (b"null", b"42", b'["black-forest-labs/flux-schnell"]', b'{"a": 1}'):
        resp = post(small_bodies, "/replicate/v1/predictions", b'{"model": ' + model + b', "input": {}}', headers)
        assert resp.status_code == 422, resp.text


@pytest.mark.parametrize("path", [CREATE, "/_emulator/faults", "/_emulator/outage"])
def test_a_body_over_max_request_bytes_is_413_in_json(small_bodies: EmulatorProcess, path: str) -> None:
    key = {"Authorization": f"Bearer {small_bodies.api_key}"}
    data = b'{"input": {"prompt": "' + b"x" * 70_000 + b'"}}'
    resp = post(small_bodies, path, data, key)
    assert resp.status_code == 413, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    assert "65536" in resp.text
    assert "--max-request-bytes" in resp.text
    assert small_bodies.stats(detail=False)["creates"] == 0
    assert "Traceback" not in small_bodies.stderr_text()


def test_a_body_under_the_bound_is_taken(small_bodies: EmulatorProcess) -> None:
    data = b'{"input": {"prompt": "' + b"x" * 60_000 + b'"}}'
    resp = post(small_bodies, CREATE, data, {"Authorization": f"Bearer {small_bodies.api_key}"})
    assert resp.status_code == 201, resp.text


def test_unauthorised_bodies_are_not_read() -> None:
    # The key is checked before the body: a stranger's big body gets the 401, not a 413.
    with EmulatorProcess(extra_args=["--max-request-bytes", "2048", "--max-stored-bytes", "2048"]) as emu:
        resp = post(emu, CREATE, b"[" * 10_000, {})
        assert resp.status_code == 401


def test_parse_json_bounds() -> None:
    assert parse_json(b"") is None
    assert parse_json(b'{"a": [1.5, 2, "x", null, true]}') == {"a": [1.5, 2, "x", None, True]}
    deep_enough = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert parse_json(deep_enough) is not None
    for raw in (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), b"{", b"1e400", b"[NaN]", b"\x80"):
        with pytest.raises(BodyError) as info:
            parse_json(raw)
        assert info.value.status == 400
