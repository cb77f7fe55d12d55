"""The benchmark's code path at tiny N: every watcher sees every prediction end, the numbers add
up, and the page with its plot is written from them (``make bench`` runs the real sizes)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.e2e.harness import REPO

N, DURATION, INTERVAL = 5, 1.5, 0.3
WATCHERS = ("trigger", "floor", "replicate", "replicate-capped")


@pytest.fixture(scope="module")
def scale(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "scale.json"
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "trigger_scale.py"),
        *("--n", str(N), "--duration", str(DURATION), "--poll-interval", str(INTERVAL), "--json", str(out)),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


def test_every_watcher_sees_every_prediction_end(scale):
    report, _ = scale
    by = {r["watcher"]: r for r in report["results"]}
    assert set(by) == set(WATCHERS)
    for watcher, r in by.items():
        assert r["n"] == N, watcher
        assert r["errors"] == 0, (watcher, r["error_samples"])
        # Each prediction polled at least once until it ended, and not much more often than it lasted.
        assert 1 <= r["polls_per_prediction"] <= DURATION / INTERVAL + 3, watcher
        assert r["polls"] == round(r["polls_per_prediction"] * N)
        assert 0 < r["cpu_s"] < r["wall_s"] * 2, watcher
        assert r["cpu_ms_per_poll"] == pytest.approx(1000 * r["cpu_s"] / r["polls"])
        assert r["peak_rss_mib"] >= r["rss_before_mib"] > 0
        # Seen after the server finished it (completed_at has millisecond precision), and soon.
        assert -0.002 <= r["delay_mean_s"] <= r["delay_p95_s"] <= INTERVAL + 2.0, watcher


def test_the_table_and_the_ratios_are_printed(scale):
    _, stdout = scale
    for watcher in WATCHERS:
        assert any(line.startswith(watcher) and f"{N:>7}" in line for line in stdout.splitlines()), watcher
    assert "CPU/poll vs floor" in stdout


def test_the_page_and_its_plot_are_written(scale, tmp_path):
    report, _ = scale
    source = tmp_path / "scale.json"
    source.write_text(json.dumps(report))
    page = tmp_path / "performance.md"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "report.py"), "--scale", str(source), "--out", str(page)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = page.read_text()
    assert "| PredictionTrigger | 5 |" in text
    assert "![CPU per poll and peak RSS against N](img/performance.png)" in text
    assert (tmp_path / "img" / "performance.png").read_bytes().startswith(b"\x89PNG")


def test_the_deployment_benchmarks_dags_load():
    from airflow.dag_processing.dagbag import DagBag

    from benchmarks.deployment_slots import SLOT_DAGS, WAIT_DAGS

    bag = DagBag(str(REPO / "benchmarks" / "dags"))
    assert bag.import_errors == {}
    assert {*SLOT_DAGS, *WAIT_DAGS} <= set(bag.dag_ids)  # batch_vs_mapped.py's DAGs are there too
