"""The per-key create rate limit: a token bucket, 429 with Retry-After, set at start or per test."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
import requests

from airflow_provider_cometapi.emulator.__main__ import build_parser, config_from_args
from airflow_provider_cometapi.emulator.config import EmulatorConfig
from airflow_provider_cometapi.emulator.ratelimit import CreateLimiter, retry_after_header
from airflow_provider_cometapi.emulator.testing import EmulatorError, EmulatorProcess
from airflow_provider_cometapi.hooks.cometapi import CometAPIHook

from .helpers import Api

if TYPE_CHECKING:
    from pathlib import Path


# --- The bucket on its own ----------------------------------------------------------------


def test_no_limit_by_default() -> None:
    limiter = CreateLimiter()
    assert all(limiter.take("k", 0.0) is None for _ in range(10_000))
    assert limiter.throttled == 0


def test_a_burst_then_the_rate() -> None:
    limiter = CreateLimiter(per_minute=600)  # 10 a second, a burst of one second's worth
    assert limiter.burst == 10
    assert [limiter.take("k", 0.0) for _ in range(10)] == [None] * 10
    wait = limiter.take("k", 0.0)
    assert wait == pytest.approx(0.1)
    assert limiter.take("k", 0.1) is None  # one token back after 0.1 s
    assert limiter.take("k", 0.1) is not None
    assert limiter.throttled == 2


def test_sustained_rate_is_the_limit() -> None:
    limiter = CreateLimiter(per_minute=6000, burst=1)
    allowed = sum(limiter.take("k", step / 1000) is None for step in range(60_000))  # every ms for a minute
    assert allowed == pytest.approx(6000, abs=2)


def test_each_key_has_its_own_bucket() -> None:
    limiter = CreateLimiter(per_minute=60)
    assert limiter.burst == 1
    assert limiter.take("a", 0.0) is None
    assert limiter.take("a", 0.0) == pytest.approx(1.0)
    assert limiter.take("b", 0.0) is None


def test_reconfiguring_refills() -> None:
    limiter = CreateLimiter(per_minute=60)
    limiter.take("k", 0.0)
    limiter.configure(120, burst=3)
    assert [limiter.take("k", 0.0) for _ in range(4)][:3] == [None] * 3
    limiter.configure(None)
    assert limiter.take("k", 0.0) is None


@pytest.mark.parametrize(
    ("per_minute", "burst"), [(0, None), (-1, None), (float("inf"), None), (True, None), ("6", None), (60, 0)]
)
def test_bad_limits_are_refused(per_minute: object, burst: object) -> None:
    with pytest.raises(ValueError, match="per_minute|burst"):
        CreateLimiter(per_minute, burst)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="per_minute|burst"):
        EmulatorConfig(create_limit=per_minute, create_burst=burst)  # type: ignore[arg-type]


def test_retry_after_is_whole_seconds_and_enough() -> None:
    assert [retry_after_header(s) for s in (0.01, 1.0, 1.2, 29.5)] == ["1", "1", "2", "30"]


def test_the_command_line_sets_it() -> None:
    config = config_from_args(build_parser().parse_args(["--create-limit", "600", "--create-burst", "5"]))
    assert (config.create_limit, config.create_burst) == (600, 5)
    assert config_from_args(build_parser().parse_args([])).create_limit is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--create-limit", "0"])


# --- Over HTTP ------------------------------------------------------------------------------


def test_a_create_over_the_limit_is_a_replicate_429(api: Api) -> None:
    api.emu.set_create_limit(60, burst=2)
    api.create_ok()
    api.create_ok()
    throttled = api.create()
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "1"
    assert throttled.json() == {
        "title": "Request was throttled.",
        "detail": "Request was throttled. Expected available in 1 second.",
        "status": 429,
    }
    stats = api.emu.stats(detail=False)
    assert (stats["creates"], stats["throttled_creates"]) == (2, 1)
    assert api.emu.create_limit_state() == {"per_minute": 60.0, "burst": 2, "throttled": 1}


def test_polls_and_other_routes_are_never_limited(api: Api) -> None:
    api.emu.set_create_limit(60, burst=1)
    pid = api.create_ok()["id"]
    for _ in range(20):
        assert api.get(pid).status_code == 200
    assert api.models().status_code == 200
    assert api.cancel(pid).status_code == 200


def test_a_rejected_key_takes_no_token(api: Api) -> None:
    api.emu.set_create_limit(60, burst=1)
    stranger = requests.post(
        f"{api.base}/replicate/v1/models/black-forest-labs/flux-schnell/predictions",
        json={"input": {"prompt": "x"}},
        headers={"Authorization": "Bearer wrong"},
        timeout=10,
    )
    assert stranger.status_code == 401
    api.create_ok()


def test_the_token_comes_back(api: Api) -> None:
    api.emu.set_create_limit(600, burst=1)  # a token every 0.1 s
    api.create_ok()
    assert api.create().status_code == 429
    time.sleep(0.15)
    api.create_ok()


def test_reset_restores_the_limit_given_at_start(api: Api) -> None:
    api.emu.set_create_limit(60, burst=1)
    api.emu.reset()
    assert api.emu.create_limit_state()["per_minute"] is None
    for _ in range(5):
        api.create_ok()


def test_the_control_route_checks_what_it_is_sent(api: Api) -> None:
    for body in ({}, {"per_minute": 0}, {"per_minute": 60, "burst": 0}, {"per_minute": 60, "other": 1}, [60]):
        answer = requests.post(
            f"{api.base}/_emulator/create-limit", json=body, headers=api.emu.control_headers(), timeout=10
        )
        assert answer.status_code == 400, body
        assert "error" in answer.json()
    unauthorised = requests.post(f"{api.base}/_emulator/create-limit", json={"per_minute": 1}, timeout=10)
    assert unauthorised.status_code == 401
    assert api.emu.create_limit_state()["per_minute"] is None
    with pytest.raises(EmulatorError, match="400"):
        api.emu.set_create_limit(-5)


def test_the_hook_rides_out_the_limit(emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one retry policy absorbs the 429s: every create lands once, none twice."""
    monkeypatch.setenv("AIRFLOW_CONN_COMETAPI_DEFAULT", emulator.connection_json())
    emulator.set_create_limit(120, burst=1)  # a token every 0.5 s; Retry-After: 1
    hook = CometAPIHook()
    ids = [hook.create_prediction("black-forest-labs/flux-schnell", {"prompt": f"fox {i}"}).id for i in range(3)]
    stats = emulator.stats(detail=False)
    assert stats["creates"] == len(set(ids)) == 3
    assert stats["throttled_creates"] >= 1


def test_set_at_start(tmp_path: Path) -> None:
    with EmulatorProcess(api_key="k", create_limit=60, extra_args=["--create-burst", "1"]) as emu:
        api = Api(emu)
        api.create_ok()
        assert api.create().status_code == 429
        assert emu.create_limit_state() == {"per_minute": 60.0, "burst": 1, "throttled": 1}
        emu.reset()  # back to the start's limit, with a full bucket
        api.create_ok()
        assert api.create().status_code == 429
