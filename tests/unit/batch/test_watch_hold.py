"""await_batch's hold (apache/airflow#72716) against a scripted fake hook: no emulator, no network."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable

from airflow_provider_cometapi.batch.watch import BatchWatch, await_batch
from airflow_provider_cometapi.exceptions import CometAPIError, CometAPITimeoutError
from airflow_provider_cometapi.models import Prediction

LOG = logging.getLogger("test")


class ScriptedHook:
    """``aget_prediction`` answers ``script(prediction_id, n)`` for the n-th poll of that id (0-based)."""

    looked_up_settings = None  # no connection read: the ends' metrics carry no cost

    def __init__(self, script: Callable[[str, int], str | CometAPIError]) -> None:
        self.script = script
        self.polls: dict[str, list[float]] = {}

    async def aget_prediction(self, prediction_id: str, *, deadline: float | None = None) -> Prediction:
        times = self.polls.setdefault(prediction_id, [])
        answer = self.script(prediction_id, len(times))
        times.append(time.monotonic())
        if isinstance(answer, CometAPIError):
            raise answer
        return Prediction(id=prediction_id, status=answer)


def wait(hook: ScriptedHook, ids: list[str], not_before: float | None, **watch_args) -> tuple[dict, float]:
    defaults = {"poll_interval": 0.1, "deadline": time.time() + 30, "resume_after": len(ids)}
    watch = BatchWatch(ids, log=LOG, **{**defaults, **watch_args})
    started = time.time()
    event = asyncio.run(await_batch(hook, watch, not_before=not_before))  # type: ignore[arg-type]
    return dict(event), time.time() - started


def test_without_a_hold_the_first_event_ends_the_wait():
    hook = ScriptedHook(lambda pid, n: "succeeded" if pid == "a" else "processing")
    event, elapsed = wait(hook, ["a", "b"], None, resume_after=1)
    assert event["reason"] == "ready" and event["finished"] == {"a": "succeeded"}
    assert elapsed < 0.5 and len(hook.polls["b"]) == 1


def test_held_polls_keep_their_pace():
    hook = ScriptedHook(lambda pid, n: "succeeded" if pid == "a" else "processing")
    event, elapsed = wait(hook, ["a", "b"], time.time() + 1.0, resume_after=1)
    assert 1.0 <= elapsed < 1.4
    assert event["reason"] == "ready" and event["finished"] == {"a": "succeeded"}
    polls = hook.polls["b"]
    assert 8 <= len(polls) <= 11, polls  # one per 0.1 s while held, no more
    assert min(b - a for a, b in itertools.pairwise(polls)) >= 0.09
    assert len(hook.polls["a"]) == 1  # ended: never polled again


def test_an_error_that_recovers_within_the_hold_is_not_handed_back():
    # Every poll fails for three rounds (an error event), then the gateway is back and both end.
    def script(pid: str, n: int) -> str | CometAPIError:
        return CometAPITimeoutError("slow") if n < 3 else "succeeded"

    event, elapsed = wait(ScriptedHook(script), ["a", "b"], time.time() + 1.0)
    assert event["reason"] == "done" and event["finished"] == {"a": "succeeded", "b": "succeeded"}
    assert 1.0 <= elapsed < 1.4


def test_a_hold_already_over_changes_nothing():
    hook = ScriptedHook(lambda pid, n: "succeeded")
    event, elapsed = wait(hook, ["a"], time.time() - 60)
    assert event["reason"] == "done" and elapsed < 0.5
