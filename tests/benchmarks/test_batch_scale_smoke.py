"""The batch benchmark's code path at small N: one batch task of 50 inputs under a high create
limit, and the batch trigger against the floor at tiny N; the script runs, reports every figure
and finds 0 duplicates and 0 lost inputs (``benchmarks/batch_scale.py`` runs the real size)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.e2e.harness import REPO

N = 50


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "batch.json"
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "batch_scale.py"),
        *("--n", str(N), "--create-limit", "60000", "--max-in-flight", "20", "--poll-interval", "0.2"),
        *("--min-duration", "0.3", "--max-duration", "0.8"),
        *("--trigger-n", "10", "--trigger-repeat", "1", "--trigger-duration", "1", "--trigger-poll-interval", "0.3"),
        *("--json", str(out)),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    return json.loads(out.read_text()), done.stdout


def test_every_input_once_and_none_lost(report):
    figures, _ = report
    batch = figures["batch"]
    assert batch["emulator_creates"] == N
    assert batch["duplicates"] == 0 and batch["prompts_created_twice"] == 0
    manifest = batch["manifest"]
    assert manifest["lines"] == N
    assert (manifest["lost"], manifest["orphans"], manifest["missing_files"]) == (0, 0, 0)
    assert manifest["statuses"] == {"succeeded": N}
    assert batch["result"]["succeeded"] == N and batch["result"]["stored_files"] == 2 * N
    # One loop on the worker: 50 inputs at most 20 in flight, stored while the others are created.
    assert batch["phase_calls"]["worker_loop"] == 1 and batch["phase_calls"]["store_in_pool"] == N


def test_the_figures_add_up(report):
    figures, _ = report
    batch = figures["batch"]
    rates = batch["rates"]
    assert rates["creates"] == N and rates["rate_per_s"] > 0
    assert rates["fraction"] == pytest.approx(rates["rate_per_s"] / 1000)
    assert batch["cpu_s"] > 0
    assert 0 < batch["wall_s"] < 60
    assert batch["peak_rss_mib"] >= batch["rss_before_mib"] > 0
    assert batch["phases_s"]["create_http"] > 0 and batch["phase_calls"]["create_http"] == N
    trigger = figures["trigger"]
    by = {run["watcher"]: run for run in trigger["runs"]}
    assert set(by) == {"floor", "batch-trigger"}
    for watcher, run in by.items():
        assert run["errors"] == 0, watcher
        assert run["polls"] >= run["n"] and run["cpu_ms_per_poll"] > 0, watcher
    expected = by["batch-trigger"]["cpu_ms_per_poll"] / by["floor"]["cpu_ms_per_poll"]
    assert trigger["ratios"][0] == pytest.approx(expected)


def test_each_goal_has_a_verdict(report):
    figures, stdout = report
    goals = {goal: held for goal, _, _, held in figures["verdicts"]}
    assert set(goals) == {
        "sustained create rate",
        "duplicates",
        "lost inputs",
        "worker peak RSS",
        "triggerer CPU per poll vs lean floor",
    }
    assert goals["duplicates"] is True and goals["lost inputs"] is True
    for goal in goals:
        assert goal in stdout
