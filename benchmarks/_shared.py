"""What the benchmark scripts share: CPU pinning, the one percentile, the trigger's ratios."""

from __future__ import annotations

import math
import os
from typing import Any

WATCHERS_COMPARED = ("floor", "replicate", "replicate-capped")


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


def trigger_ratios(by_watcher: dict[str, dict[str, Any]]) -> dict[str, float]:
    """
    For one N: the trigger's CPU per poll over each other watcher's (keyed by watcher), and its
    memory growth over the floor's (key ``growth``); NaN where a watcher did not run.
    """
    trigger = by_watcher["trigger"]
    ratios = {
        name: ratio(trigger["cpu_ms_per_poll"], by_watcher[name]["cpu_ms_per_poll"]) if name in by_watcher else math.nan
        for name in WATCHERS_COMPARED
    }
    floor = by_watcher.get("floor")
    ratios["growth"] = ratio(trigger["growth_mib_per_1000"], floor["growth_mib_per_1000"]) if floor else math.nan
    return ratios
