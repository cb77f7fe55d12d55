"""What the benchmark scripts share: CPU pinning, the one percentile, the trigger's ratios, what a
destination folder holds, and which metadata-DB tables are written by the components' background
work rather than by a DAG run."""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path
from typing import Any

WATCHERS_COMPARED = ("floor", "replicate", "replicate-capped")
# Written whatever runs: the components' heartbeats (job) and the dag-processor's parses.
BACKGROUND_TABLES = frozenset(
    {"job", "dag", "dag_bundle", "dag_code", "dag_version", "serialized_dag", "dag_tag", "dag_warning", "import_error"}
)


def pin(pid: int, cpu: int | None) -> bool:
    """Pin ``pid`` (0 = this process) to ``cpu``; False where that is not possible or not asked."""
    if cpu is None or not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        return False
    try:
        os.sched_setaffinity(pid, {cpu})
    except OSError:
        return False
    return True


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) and not math.isnan(a) else float("nan")


def medians_by_watcher(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """
    For the runs of one N: each watcher's runs as one, its CPU per poll and memory growth the
    median over its repeats, so that one run's full garbage collection or a neighbour's burst of
    work does not decide a ratio; its errors summed and its p95 delay the worst over them, so that
    a check of those sees every run (the other fields from its last run).
    """
    grouped: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        grouped.setdefault(run["watcher"], []).append(run)
    return {
        watcher: {
            **repeats[-1],
            "cpu_ms_per_poll": statistics.median(r["cpu_ms_per_poll"] for r in repeats),
            "growth_mib_per_1000": statistics.median(r["growth_mib_per_1000"] for r in repeats),
            "errors": sum(r.get("errors", 0) for r in repeats),
            "delay_p95_s": max(r.get("delay_p95_s", 0.0) for r in repeats),
            "repeats": len(repeats),
        }
        for watcher, repeats in grouped.items()
    }


def trigger_ratios(by_watcher: dict[str, dict[str, Any]]) -> dict[str, float]:
    """
    For one N (``medians_by_watcher``): the trigger's CPU per poll over each other watcher's
    (keyed by watcher), and its memory growth over the floor's (key ``growth``); NaN where a
    watcher did not run.
    """
    trigger = by_watcher["trigger"]
    ratios = {
        name: ratio(trigger["cpu_ms_per_poll"], by_watcher[name]["cpu_ms_per_poll"]) if name in by_watcher else math.nan
        for name in WATCHERS_COMPARED
    }
    floor = by_watcher.get("floor")
    ratios["growth"] = ratio(trigger["growth_mib_per_1000"], floor["growth_mib_per_1000"]) if floor else math.nan
    return ratios


NOT_STARTED = frozenset({"", "none", "scheduled", "queued"})


def executions_done(result: dict[str, Any]) -> int:
    """
    Task executions a run's workers did: task instances that started (any state past ``queued``),
    one more for each deferral (its resume) and each retry; of a run cut short, those so far.
    """
    started = sum(count for state, count in result["states"].items() if state not in NOT_STARTED)
    return int(started + result["deferrals"] + result["retries"])


def run_rows_written(per_table: dict[str, dict[str, int]]) -> int:
    """Rows inserted + updated in the tables a DAG run writes (``BACKGROUND_TABLES`` left out)."""
    return sum(d["ins"] + d["upd"] for name, d in per_table.items() if name not in BACKGROUND_TABLES)


def stored_outputs(folder: Path) -> dict[str, int]:
    """What a destination folder holds: images (each decoded by Pillow), sidecars, manifests, leftovers."""
    from PIL import Image

    names = [path.name for path in folder.iterdir()] if folder.exists() else []
    images = [name for name in names if name.endswith(".webp") and not name.startswith(".")]
    broken = 0
    for name in images:
        try:
            with Image.open(folder / name) as picture:
                picture.load()
        except Exception:
            broken += 1
    return {
        "images": len(images),
        "broken_images": broken,
        "sidecars": sum(1 for name in names if name.endswith(".json")),
        "manifests": sum(1 for name in names if name.endswith(".manifest.jsonl")),
        "partials": sum(1 for name in names if ".partial" in name),
    }
