"""The provider in a real deployment: LocalExecutor, scheduler, triggerer, PostgreSQL."""

from __future__ import annotations

import re
import time


def test_deferrable_create_then_deferrable_sensor(stack, emulator):
    seen: dict[str, set[str]] = {}
    run_id = stack.trigger("e2e_create_then_sense")
    assert stack.wait_for_run("e2e_create_then_sense", run_id, seen_states=seen) == "success"
    assert "deferred" in seen["create[-1]"]
    # The prediction had ended when the sensor started: its first look found it, no deferral needed.
    assert "success" in seen["sense[-1]"]
    assert emulator.stats(detail=False)["creates"] == 1
    log = stack.task_log("e2e_create_then_sense", run_id, "create")
    # The trigger says the statuses it saw once, with the outcome, in the resumed task's log.
    assert re.search(r"Statuses: (\w+, )*succeeded\.", log), log[-2000:]
    assert emulator.api_key not in log


def test_daily_example_end_to_end(stack, emulator):
    seen: dict[str, set[str]] = {}
    run_id = stack.unpause_and_get_scheduled_run("cometapi_daily_images")
    assert stack.wait_for_run("cometapi_daily_images", run_id, seen_states=seen) == "success"
    generate = {key: states for key, states in seen.items() if key.startswith("generate[") and key != "generate[-1]"}
    assert len(generate) == 3
    assert all("deferred" in states for states in generate.values())
    stats = emulator.stats()
    assert stats["creates"] == 3
    assert len({p["prompt"] for p in stats["predictions"].values()}) == 3
    logical_date = stack.api("GET", f"dags/cometapi_daily_images/dagRuns/{run_id}")["logical_date"]
    folder = stack.home / "images" / logical_date[:10]
    for prediction_id in stats["predictions"]:
        assert (folder / f"{prediction_id}_0.webp").stat().st_size > 0
        assert (folder / f"{prediction_id}.json").exists()
    for map_index in range(3):
        log = stack.task_log("cometapi_daily_images", run_id, "generate", map_index=map_index)
        assert "Created prediction" in log
        assert emulator.api_key not in log


def test_sensor_pattern_defers_the_sensor(stack, emulator):
    seen: dict[str, set[str]] = {}
    run_id = stack.trigger("cometapi_sensor_pattern")
    state = stack.wait_for_run("cometapi_sensor_pattern", run_id, seen_states=seen)
    assert state == "success", (seen, stack.task_log("cometapi_sensor_pattern", run_id, "store"))
    assert "deferred" in seen["wait[-1]"]
    assert emulator.stats(detail=False)["creates"] == 1


def wait_for_state(stack, dag_id, run_id, task_id, state, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {ti["task_id"]: ti["state"] for ti in stack.task_instances(dag_id, run_id)}
        if states.get(task_id) == state:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{task_id} never reached {state}")


def test_deferred_predictions_hold_no_worker_slot(stack, emulator):
    started = time.monotonic()
    run_id = stack.trigger("e2e_slots")
    assert stack.wait_for_run("e2e_slots", run_id, timeout=240) == "success"
    elapsed = time.monotonic() - started
    print(f"10 predictions of 10 s on 2 worker slots, deferred: {elapsed:.1f} s")
    assert emulator.stats(detail=False)["creates"] == 10
    # Holding slots would take five rounds of 10 s (50 s) plus overhead.
    assert elapsed < 50


def test_triggerer_restart_neither_recreates_nor_cancels(stack, emulator):
    run_id = stack.trigger("e2e_long")
    wait_for_state(stack, "e2e_long", run_id, "generate", "deferred")
    time.sleep(2)
    triggerer = next(name for name in stack.processes if name.startswith("triggerer"))
    stack.stop_component(triggerer)
    stack.start_component("triggerer", name="triggerer-restarted")
    assert stack.wait_for_run("e2e_long", run_id, timeout=180) == "success"
    stats = emulator.stats(detail=False)
    assert stats["creates"] == 1
    assert stats["cancels"] == 0


def test_user_marking_a_deferred_task_failed_cancels_the_prediction(stack, emulator):
    run_id = stack.trigger("e2e_long")
    wait_for_state(stack, "e2e_long", run_id, "generate", "deferred")
    time.sleep(2)
    stack.api("PATCH", f"dags/e2e_long/dagRuns/{run_id}/taskInstances/generate", json={"new_state": "failed"})
    deadline = time.monotonic() + 60
    while emulator.stats(detail=False)["cancels"] == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    stats = emulator.stats()
    assert stats["cancels"] == 1
    (prediction,) = stats["predictions"].values()
    assert prediction["status"] == "canceled"
