"""@task.cometapi in the LocalExecutor stack: its waits deferred to the triggerer, its outputs stored."""

from __future__ import annotations

import re


def test_decorated_tasks_defer_and_their_outputs_are_stored(stack, emulator):
    seen: dict[str, set[str]] = {}
    run_id = stack.trigger("e2e_taskflow")
    state = stack.wait_for_run("e2e_taskflow", run_id, timeout=240, seen_states=seen)
    assert state == "success", (seen, stack.task_log("e2e_taskflow", run_id, "generate", map_index=0))
    for map_index in range(2):
        assert "deferred" in seen[f"generate[{map_index}]"]
    stats = emulator.stats()
    assert stats["creates"] == 2
    assert sorted(p["prompt"] for p in stats["predictions"].values()) == [
        "a harbour, deferred by TaskFlow",
        "a lighthouse, deferred by TaskFlow",
    ]
    folder = stack.home / "images" / "taskflow"
    for prediction_id in stats["predictions"]:
        assert (folder / f"{prediction_id}_0.webp").stat().st_size > 0
        assert (folder / f"{prediction_id}.json").exists()
    for map_index in range(2):
        log = stack.task_log("e2e_taskflow", run_id, "generate", map_index=map_index)
        assert "generate() returned the input" in log
        # The trigger says the statuses it saw once, with the outcome, in the resumed task's log.
        assert re.search(r"Statuses: (\w+, )*succeeded\.", log), log[-2000:]
        assert emulator.api_key not in log
        stored = stack.task_log("e2e_taskflow", run_id, "store", map_index=map_index)
        assert "Stored output 1 of 1" in stored
