"""The per-prediction ``_emulator`` input key."""

from __future__ import annotations

import base64
import io
import time
from typing import TYPE_CHECKING, Any

import pytest
from PIL import Image

from airflow_provider_cometapi.emulator.models import DEFAULT_ERRORS

from .helpers import file_url

if TYPE_CHECKING:
    from .helpers import Api


def _decode_data_uri(uri: str) -> tuple[str, Image.Image]:
    head, _, payload = uri.partition(",")
    assert head.startswith("data:image/")
    assert head.endswith(";base64")
    return head[5:-7], Image.open(io.BytesIO(base64.b64decode(payload)))


def test_control_key_is_stripped_from_the_echoed_input(api: Api) -> None:
    p = api.create_ok(prompt="fox", control={"duration": 0})
    assert p["input"] == {"prompt": "fox"}
    assert api.emu.stats()["predictions"][p["id"]]["prompt"] == "fox"


def test_duration_zero_is_terminal_at_create(api: Api) -> None:
    p = api.create_ok(control={"duration": 0})
    assert p["status"] == "succeeded"
    assert p["started_at"] == p["completed_at"] == p["created_at"]


def test_starting_for_is_capped_at_duration(api: Api) -> None:
    p = api.create_ok(control={"starting_for": 5, "duration": 0.3})
    done = api.wait_terminal(p["id"], timeout=3)
    assert done["status"] == "succeeded"
    assert done["started_at"] == done["completed_at"]


@pytest.mark.parametrize("outcome", ["failed", "aborted"])
def test_failed_and_aborted_carry_an_error(api: Api, outcome: str) -> None:
    p = api.create_ok(control={"duration": 0.2, "outcome": outcome})
    done = api.wait_terminal(p["id"])
    assert done["status"] == outcome
    assert done["error"] == DEFAULT_ERRORS[outcome]
    assert done["output"] is None
    assert done["completed_at"] is not None
    assert "metrics" not in done
    assert done["logs"].endswith(DEFAULT_ERRORS[outcome] + "\n")
    assert "Total safe images" not in done["logs"]


def test_custom_error_text(api: Api) -> None:
    p = api.create_ok(control={"duration": 0, "outcome": "failed", "error": "NSFW content detected"})
    assert p["status"] == "failed"
    assert p["error"] == "NSFW content detected"


def test_outcome_canceled(api: Api) -> None:
    p = api.create_ok(control={"duration": 0.2, "outcome": "canceled"})
    done = api.wait_terminal(p["id"])
    assert done["status"] == "canceled"
    assert done["error"] is None
    assert done["output"] is None


def test_outcome_never_stays_processing_until_canceled(api: Api) -> None:
    p = api.create_ok(control={"starting_for": 0, "duration": 0.1, "outcome": "never"})
    time.sleep(0.4)
    body = api.get_ok(p["id"])
    assert body["status"] == "processing"
    assert body["completed_at"] is None
    assert api.cancel(p["id"]).json()["status"] == "canceled"


def test_prefer_wait_on_never_gives_up_after_n_seconds(api: Api) -> None:
    started = time.monotonic()
    resp = api.create(wait=1, control={"outcome": "never"})
    assert 0.95 <= time.monotonic() - started < 3
    assert resp.json()["status"] == "processing"


def test_unknown_status_is_reported_while_processing(api: Api) -> None:
    p = api.create_ok(control={"starting_for": 0, "duration": 0.6, "unknown_status": "queued_elsewhere"})
    assert p["status"] == "queued_elsewhere"
    assert api.get_ok(p["id"])["status"] == "queued_elsewhere"
    assert api.wait_terminal(p["id"])["status"] == "succeeded"


@pytest.mark.parametrize(
    ("model", "fmt", "mime"),
    [
        ("black-forest-labs/flux-schnell", "png", "image/png"),
        ("black-forest-labs/flux-1.1-pro", "jpg", "image/jpeg"),
        ("black-forest-labs/flux-dev", "webp", "image/webp"),
    ],
)
def test_data_uri_outputs(api: Api, model: str, fmt: str, mime: str) -> None:
    p = api.create_ok(model, output_format=fmt, aspect_ratio="16:9", control={"duration": 0, "data_uri": True})
    outputs = p["output"] if isinstance(p["output"], list) else [p["output"]]
    assert isinstance(p["output"], list) == (model != "black-forest-labs/flux-1.1-pro")
    got_mime, image = _decode_data_uri(outputs[0])
    assert got_mime == mime
    assert image.format == {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[fmt]
    assert image.size == (512, 288)


def test_partial_output_shows_data_uris_while_processing(api: Api) -> None:
    p = api.create_ok(num_outputs=2, control={"starting_for": 0, "duration": 0.6, "partial_output": True})
    mid = api.get_ok(p["id"])
    assert mid["status"] == "processing"
    assert len(mid["output"]) == 2
    assert all(uri.startswith("data:image/webp;base64,") for uri in mid["output"])
    done = api.wait_terminal(p["id"])
    assert done["output"] == [file_url(api, done, i, "webp") for i in range(2)]


def test_partial_output_with_prefer_wait_that_times_out(api: Api) -> None:
    resp = api.create(wait=1, control={"starting_for": 0, "duration": 10, "partial_output": True})
    body = resp.json()
    assert body["status"] == "processing"
    assert body["output"][0].startswith("data:image/")


@pytest.mark.parametrize(
    ("control", "field"),
    [
        ("fast", "input._emulator"),
        ({"duration": -1}, "input._emulator.duration"),
        ({"duration": "1"}, "input._emulator.duration"),
        ({"starting_for": True}, "input._emulator.starting_for"),
        ({"outcome": "exploded"}, "input._emulator.outcome"),
        ({"error": 5}, "input._emulator.error"),
        ({"unknown_status": ""}, "input._emulator.unknown_status"),
        ({"data_uri": "yes"}, "input._emulator.data_uri"),
        ({"partial_output": 1}, "input._emulator.partial_output"),
        ({"speed": "fast"}, "input._emulator.speed"),
    ],
)
def test_invalid_control_is_422(api: Api, control: Any, field: str) -> None:
    resp = api.create(control=control)
    assert resp.status_code == 422
    assert [f["field"] for f in resp.json()["invalid_fields"]] == [field]
