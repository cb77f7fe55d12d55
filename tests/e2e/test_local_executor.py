"""The provider in a real deployment: LocalExecutor, scheduler, triggerer, PostgreSQL."""

from __future__ import annotations


def test_deferrable_create_then_deferrable_sensor(stack, emulator):
    seen: dict[str, set[str]] = {}
    run_id = stack.trigger("e2e_create_then_sense")
    assert stack.wait_for_run("e2e_create_then_sense", run_id, seen_states=seen) == "success"
    assert "deferred" in seen["create[-1]"]
    # The prediction had ended when the sensor started: its first look found it, no deferral needed.
    assert "success" in seen["sense[-1]"]
    assert emulator.stats(detail=False)["creates"] == 1
    log = stack.task_log("e2e_create_then_sense", run_id, "create")
    assert "status processing" in log
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
