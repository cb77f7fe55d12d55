"""The Replicate-compatible routes over real HTTP: auth, create, query, cancel, models, stats."""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest
import requests

from airflow_provider_cometapi.emulator.server import parse_prefer_wait

from .helpers import SCHNELL, file_url

if TYPE_CHECKING:
    from airflow_provider_cometapi.emulator.testing import EmulatorProcess

    from .helpers import Api

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models"),
        ("POST", "/replicate/v1/models/black-forest-labs/flux-schnell/predictions"),
        ("POST", "/replicate/v1/predictions"),
        ("GET", "/replicate/v1/predictions/abc"),
        ("POST", "/replicate/v1/predictions/abc/cancel"),
    ],
)
@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "Basic dGVzdC1rZXk=", "test-key"])
def test_bad_or_missing_key_is_401_in_openai_envelope(
    emulator: EmulatorProcess, method: str, path: str, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    resp = requests.request(method, emulator.base_url + path, headers=headers, json={}, timeout=10)
    assert resp.status_code == 401
    error = resp.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert error["message"]
    assert error["type"]
    assert emulator.stats(detail=False)["creates"] == 0


def test_bearer_scheme_is_case_insensitive(emulator: EmulatorProcess) -> None:
    resp = requests.get(emulator.base_url + "/v1/models", headers={"Authorization": "bearer test-key"}, timeout=10)
    assert resp.status_code == 200


def test_models_list_is_openai_style(api: Api) -> None:
    resp = api.models()
    assert resp.status_code == 200
    body = resp.json()
    assert body["object"] == "list"
    ids = {m["id"] for m in body["data"]}
    assert {
        "black-forest-labs/flux-schnell",
        "black-forest-labs/flux-dev",
        "black-forest-labs/flux-pro",
        "black-forest-labs/flux-1.1-pro",
        "black-forest-labs/flux-1.1-pro-ultra",
        "black-forest-labs/flux-kontext-pro",
        "black-forest-labs/flux-kontext-max",
    } == ids
    for model in body["data"]:
        assert model["object"] == "model"
        assert model["owned_by"] == "black-forest-labs"
        assert model["created"] == 0


# -- create ----------------------------------------------------------------------------------


def test_create_by_path_answers_201_with_a_starting_prediction(api: Api) -> None:
    resp = api.create(prompt="A paper boat", aspect_ratio="1:1", output_format="webp", output_quality=80)
    assert resp.status_code == 201
    assert resp.headers["Content-Type"].startswith("application/json")
    p = resp.json()
    assert re.fullmatch(r"[a-z0-9]{26}", p["id"])
    assert p["model"] == SCHNELL
    assert p["version"] == "hidden"
    assert p["input"] == {
        "prompt": "A paper boat",
        "aspect_ratio": "1:1",
        "output_format": "webp",
        "output_quality": 80,
    }
    assert p["status"] == "starting"
    assert p["output"] is None
    assert p["logs"] == ""
    assert p["error"] is None
    assert p["data_removed"] is False
    assert p["source"] == "api"
    assert ISO_Z.match(p["created_at"])
    assert p["started_at"] is None
    assert p["completed_at"] is None
    assert "metrics" not in p
    # urls point at Replicate, never at the emulator: clients must build their own URLs.
    pid = p["id"]
    assert p["urls"] == {
        "get": f"https://api.replicate.com/v1/predictions/{pid}",
        "cancel": f"https://api.replicate.com/v1/predictions/{pid}/cancel",
        "stream": f"https://stream.replicate.com/v1/files/{pid}",
        "web": f"https://replicate.com/p/{pid}",
    }


def test_ids_are_unique(api: Api) -> None:
    ids = {api.create_ok(control={"duration": 0})["id"] for _ in range(20)}
    assert len(ids) == 20


def test_create_by_path_accepts_a_version_suffix(api: Api) -> None:
    p = api.create_ok("black-forest-labs/flux-schnell:abc123")
    assert p["model"] == SCHNELL


@pytest.mark.parametrize(
    "body",
    [
        {"model": "black-forest-labs/flux-1.1-pro"},
        {"version": "black-forest-labs/flux-1.1-pro:5e4f3d2c"},
        {"model": "black-forest-labs/flux-1.1-pro:5e4f3d2c"},
    ],
)
def test_create_by_body(api: Api, body: dict[str, Any]) -> None:
    resp = api.session.post(
        f"{api.base}/replicate/v1/predictions", json={**body, "input": {"prompt": "cake"}}, timeout=10
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["model"] == "black-forest-labs/flux-1.1-pro"
    assert resp.json()["input"] == {"prompt": "cake"}


def test_create_by_body_without_model_is_422(api: Api) -> None:
    resp = api.session.post(f"{api.base}/replicate/v1/predictions", json={"input": {"prompt": "x"}}, timeout=10)
    assert resp.status_code == 422
    assert resp.json()["invalid_fields"][0]["field"] == "model"


@pytest.mark.parametrize(
    ("method", "path", "json_body"),
    [
        ("POST", "/replicate/v1/models/black-forest-labs/flux-9000/predictions", {"input": {"prompt": "x"}}),
        ("POST", "/replicate/v1/models/acme/flux-schnell/predictions", {"input": {"prompt": "x"}}),
        ("POST", "/replicate/v1/predictions", {"model": "acme/painter", "input": {"prompt": "x"}}),
    ],
)
def test_unknown_model_is_404_problem(api: Api, method: str, path: str, json_body: dict[str, Any]) -> None:
    resp = api.session.request(method, api.base + path, json=json_body, timeout=10)
    assert resp.status_code == 404
    body = resp.json()
    assert body["status"] == 404
    assert body["title"]
    assert body["detail"]
    assert api.emu.stats(detail=False)["creates"] == 0


def test_encoded_slash_in_model_is_not_a_route(api: Api) -> None:
    # SPEC: the slash must stay a slash; a client that escapes it gets a 404.
    resp = api.create("black-forest-labs%2Fflux-schnell")
    assert resp.status_code == 404


def test_unknown_prediction_is_404(api: Api) -> None:
    for resp in (api.get("doesnotexist0000000000000"), api.cancel("doesnotexist0000000000000")):
        assert resp.status_code == 404
        assert resp.json()["status"] == 404


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "input_", "field"),
    [
        (SCHNELL, {}, "input.prompt"),
        (SCHNELL, {"prompt": ""}, "input.prompt"),
        (SCHNELL, {"prompt": "   "}, "input.prompt"),
        (SCHNELL, {"prompt": 42}, "input.prompt"),
        (SCHNELL, {"prompt": "x", "aspect_ratio": "7:5"}, "input.aspect_ratio"),
        (SCHNELL, {"prompt": "x", "aspect_ratio": "match_input_image"}, "input.aspect_ratio"),
        (SCHNELL, {"prompt": "x", "output_format": "gif"}, "input.output_format"),
        (SCHNELL, {"prompt": "x", "output_quality": 0}, "input.output_quality"),
        (SCHNELL, {"prompt": "x", "output_quality": 101}, "input.output_quality"),
        (SCHNELL, {"prompt": "x", "output_quality": "80"}, "input.output_quality"),
        (SCHNELL, {"prompt": "x", "output_quality": True}, "input.output_quality"),
        (SCHNELL, {"prompt": "x", "num_outputs": 0}, "input.num_outputs"),
        (SCHNELL, {"prompt": "x", "num_outputs": 5}, "input.num_outputs"),
        ("black-forest-labs/flux-dev", {"prompt": "x", "num_outputs": 2.5}, "input.num_outputs"),
        (SCHNELL, {"prompt": "x", "seed": "7"}, "input.seed"),
        (SCHNELL, {"prompt": "x", "seed": 1.5}, "input.seed"),
        ("black-forest-labs/flux-kontext-pro", {"prompt": "x", "aspect_ratio": "2:1"}, "input.aspect_ratio"),
    ],
)
def test_invalid_field_is_422_with_invalid_fields(api: Api, model: str, input_: dict[str, Any], field: str) -> None:
    resp = api.session.post(f"{api.base}/replicate/v1/models/{model}/predictions", json={"input": input_}, timeout=10)
    assert resp.status_code == 422
    body = resp.json()
    assert body["status"] == 422
    assert body["title"]
    assert [f["field"] for f in body["invalid_fields"]] == [field]
    assert {"type", "field", "description"} == set(body["invalid_fields"][0])
    assert field in body["detail"]
    assert api.emu.stats(detail=False)["creates"] == 0


def test_every_bad_field_is_reported(api: Api) -> None:
    resp = api.create(prompt="", aspect_ratio="x", output_format="bmp", output_quality=500, num_outputs=9, seed="s")
    assert resp.status_code == 422
    fields = {f["field"] for f in resp.json()["invalid_fields"]}
    assert fields == {
        "input.prompt",
        "input.aspect_ratio",
        "input.output_format",
        "input.output_quality",
        "input.num_outputs",
        "input.seed",
    }


@pytest.mark.parametrize("model", ["black-forest-labs/flux-kontext-pro", "black-forest-labs/flux-kontext-max"])
def test_kontext_accepts_match_input_image(api: Api, model: str) -> None:
    p = api.create_ok(model, aspect_ratio="match_input_image", input_image="https://example.com/in.png")
    assert p["input"]["aspect_ratio"] == "match_input_image"


def test_single_output_models_ignore_num_outputs(api: Api) -> None:
    p = api.create_ok("black-forest-labs/flux-1.1-pro", num_outputs=99, control={"duration": 0})
    assert isinstance(p["output"], str)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"[1, 2]", "body"),
        (b"", "body"),
        (b'{"input": "a cat"}', "input"),
        (b'{"input": ["a cat"]}', "input"),
        (b'{"prompt": "no input object"}', "input"),
    ],
)
def test_bad_body_is_422(api: Api, data: bytes, field: str) -> None:
    # JSON of the wrong shape; a body that is not JSON at all is a 400 (test_emulator_bodies.py).
    resp = api.session.post(
        f"{api.base}/replicate/v1/models/{SCHNELL}/predictions",
        data=data,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert resp.status_code == 422
    assert resp.json()["invalid_fields"][0]["field"] == field


def test_unknown_input_keys_pass_through(api: Api) -> None:
    extra: dict[str, Any] = {"go_fast": True, "megapixels": "1", "num_inference_steps": 4, "custom": {"nested": [1]}}
    p = api.create_ok(prompt="fox", **extra)
    assert p["input"] == {"prompt": "fox", **extra}
    assert api.get_ok(p["id"])["input"] == {"prompt": "fox", **extra}


# -- progression -----------------------------------------------------------------------------


def test_status_progresses_to_succeeded_with_timestamps_metrics_and_logs(api: Api) -> None:
    p = api.create_ok(seed=1234, control={"starting_for": 0.3, "duration": 1.2})
    assert p["status"] == "starting"
    time.sleep(0.6)
    mid = api.get_ok(p["id"])
    assert mid["status"] == "processing"
    assert mid["output"] is None
    assert ISO_Z.match(mid["started_at"])
    assert mid["completed_at"] is None
    assert mid["logs"].startswith("Using seed: 1234\n")
    assert "  0%|          | 0/4\n" in mid["logs"]
    assert "Total safe images" not in mid["logs"]

    done = api.wait_terminal(p["id"])
    assert done["status"] == "succeeded"
    created, started, completed = (_ts(done[k]) for k in ("created_at", "started_at", "completed_at"))
    assert created < started < completed
    assert (started - created).total_seconds() == pytest.approx(0.3, abs=0.01)
    assert (completed - created).total_seconds() == pytest.approx(1.2, abs=0.01)
    assert done["metrics"] == {"predict_time": pytest.approx(0.9), "total_time": pytest.approx(1.2), "image_count": 1}
    assert done["logs"] == (
        "Using seed: 1234\n"
        "  0%|          | 0/4\n"
        " 25%|██▌       | 1/4\n"
        " 50%|█████     | 2/4\n"
        " 75%|███████▌  | 3/4\n"
        "100%|██████████| 4/4\n"
        "Total safe images: 1 out of 1\n"
    )
    assert done["error"] is None
    assert done["data_removed"] is False


def test_logs_grow_while_processing(api: Api) -> None:
    p = api.create_ok("black-forest-labs/flux-dev", control={"starting_for": 0, "duration": 0.8})
    seen = []
    for _ in range(4):
        seen.append(api.get_ok(p["id"])["logs"].count("\n"))
        time.sleep(0.15)
    assert seen == sorted(seen)
    assert seen[-1] > seen[0]


@pytest.mark.parametrize(
    ("model", "num_outputs", "expect_list"),
    [
        ("black-forest-labs/flux-schnell", 3, True),
        ("black-forest-labs/flux-dev", None, True),
        ("black-forest-labs/flux-pro", None, False),
        ("black-forest-labs/flux-1.1-pro", None, False),
        ("black-forest-labs/flux-1.1-pro-ultra", None, False),
        ("black-forest-labs/flux-kontext-pro", None, False),
        ("black-forest-labs/flux-kontext-max", None, False),
    ],
)
def test_output_is_list_or_string_by_model(api: Api, model: str, num_outputs: int | None, expect_list: bool) -> None:
    extra = {"num_outputs": num_outputs} if num_outputs else {}
    p = api.create_ok(model, output_format="png", control={"duration": 0}, **extra)
    assert p["status"] == "succeeded"
    if expect_list:
        n = num_outputs or 1
        assert p["output"] == [file_url(api, p, i, "png") for i in range(n)]
        assert p["metrics"]["image_count"] == n
        assert f"Total safe images: {n} out of {n}\n" in p["logs"]
    else:
        assert p["output"] == file_url(api, p, 0, "png")


def test_output_urls_follow_the_address_the_request_came_to(api: Api) -> None:
    p = api.create_ok(control={"duration": 0})
    other = api.base.replace("127.0.0.1", "localhost")
    resp = api.session.get(f"{other}/replicate/v1/predictions/{p['id']}", timeout=10)
    assert resp.json()["output"][0].startswith(f"{other}/files/")


# -- Prefer: wait ----------------------------------------------------------------------------


def test_prefer_wait_returns_a_finished_prediction(api: Api) -> None:
    started = time.monotonic()
    resp = api.create(wait=5)
    took = time.monotonic() - started
    assert resp.status_code == 201
    assert resp.json()["status"] == "succeeded"
    assert resp.json()["output"]
    assert 0.45 <= took < 3.0


@pytest.mark.parametrize(
    ("control", "status"),
    [({"starting_for": 0.1, "duration": 10}, "processing"), ({"starting_for": 10, "duration": 20}, "starting")],
)
def test_prefer_wait_answers_unfinished_when_time_is_up(api: Api, control: dict[str, float], status: str) -> None:
    started = time.monotonic()
    resp = api.create(wait=1, control=control)
    took = time.monotonic() - started
    assert resp.status_code == 201
    assert resp.json()["status"] == status
    assert resp.json()["output"] is None
    assert 0.95 <= took < 3.0


def test_without_prefer_create_answers_at_once(api: Api) -> None:
    started = time.monotonic()
    resp = api.create(control={"duration": 10})
    assert time.monotonic() - started < 0.5
    assert resp.json()["status"] == "starting"


def test_prefer_wait_on_the_body_route(api: Api) -> None:
    resp = api.session.post(
        f"{api.base}/replicate/v1/predictions",
        json={"model": "black-forest-labs/flux-1.1-pro", "input": {"prompt": "x"}},
        headers={"Prefer": "wait=10"},
        timeout=20,
    )
    assert resp.status_code == 201
    assert resp.json()["status"] == "succeeded"
    assert isinstance(resp.json()["output"], str)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("wait=10", 10.0),
        ("wait=0", 1.0),
        ("wait=600", 60.0),
        ("wait", 60.0),
        ("respond-async, wait=5", 5.0),
        ("WAIT = 3", 3.0),
        ("wait=soon", None),
        ("return=minimal", None),
    ],
)
def test_prefer_wait_parsing_clamps_to_1_60(header: str | None, expected: float | None) -> None:
    assert parse_prefer_wait(header) == expected


# -- cancel ----------------------------------------------------------------------------------


def test_cancel_running_prediction(api: Api) -> None:
    p = api.create_ok(control={"starting_for": 0, "duration": 10})
    time.sleep(0.1)
    resp = api.cancel(p["id"])
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "canceled"
    assert ISO_Z.match(body["completed_at"])
    assert body["output"] is None
    assert body["error"] is None
    time.sleep(0.1)
    assert api.get_ok(p["id"])["status"] == "canceled"
    stats = api.emu.stats()
    assert stats["cancels"] == 1
    assert stats["predictions"][p["id"]]["cancels"] == 1


def test_cancel_while_starting_never_started(api: Api) -> None:
    p = api.create_ok(control={"starting_for": 5, "duration": 10})
    body = api.cancel(p["id"]).json()
    assert body["status"] == "canceled"
    assert body["started_at"] is None
    assert body["logs"] == ""


def test_cancel_terminal_prediction_answers_it_unchanged(api: Api) -> None:
    p = api.create_ok(control={"duration": 0})
    resp = api.cancel(p["id"])
    assert resp.status_code == 200
    assert resp.json()["status"] == "succeeded"
    assert resp.json()["output"] == p["output"]


def test_cancel_wakes_a_held_prefer_wait(api: Api) -> None:
    result: dict[str, Any] = {}

    def create() -> None:
        started = time.monotonic()
        result["resp"] = api.create(wait=20, prompt="held", control={"duration": 30})
        result["took"] = time.monotonic() - started

    thread = threading.Thread(target=create)
    thread.start()
    deadline = time.monotonic() + 5
    pid = None
    while pid is None and time.monotonic() < deadline:
        pid = next(iter(api.emu.stats()["predictions"]), None)
        time.sleep(0.02)
    assert pid is not None
    api.cancel(pid)
    thread.join(10)
    assert result["resp"].json()["status"] == "canceled"
    assert result["took"] < 5


# -- stats and reset -------------------------------------------------------------------------


def test_stats_count_each_kind_of_request(api: Api) -> None:
    a = api.create_ok(prompt="first prompt", control={"duration": 0})
    b = api.create_ok("black-forest-labs/flux-pro", prompt="second prompt", control={"duration": 10})
    api.get_ok(a["id"])
    api.get_ok(a["id"])
    api.get_ok(b["id"])
    api.cancel(b["id"])
    api.models()
    assert requests.get(a["output"][0], timeout=10).status_code == 200
    api.create(prompt="")  # a 422 is a request but no create

    stats = api.emu.stats()
    assert {k: stats[k] for k in ("creates", "polls", "cancels", "file_downloads", "models", "faults_served")} == {
        "creates": 2,
        "polls": 3,
        "cancels": 1,
        "file_downloads": 1,
        "models": 1,
        "faults_served": 0,
    }
    assert stats["requests"] == 9
    assert stats["predictions"] == {
        a["id"]: {"model": SCHNELL, "prompt": "first prompt", "status": "succeeded", "polls": 2, "cancels": 0},
        b["id"]: {
            "model": "black-forest-labs/flux-pro",
            "prompt": "second prompt",
            "status": "canceled",
            "polls": 1,
            "cancels": 1,
        },
    }
    brief = api.emu.stats(detail=False)
    assert "predictions" not in brief
    assert brief["creates"] == 2


def test_reset_forgets_predictions_stats_and_faults(api: Api) -> None:
    p = api.create_ok()
    api.emu.add_fault(kind="throttle", count=-1)
    api.emu.reset()
    assert api.get(p["id"]).status_code == 404  # not throttled: faults are gone too
    stats = api.emu.stats()
    assert stats["creates"] == 0
    assert stats["predictions"] == {}
    assert api.emu.faults() == []
