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


def test_a_ratio_is_of_the_watchers_medians_not_of_their_last_runs(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from _shared import medians_by_watcher, trigger_ratios

    def run(watcher, cpu_ms, growth=1.0, errors=0, p95=0.9):
        return {
            "watcher": watcher, "cpu_ms_per_poll": cpu_ms, "growth_mib_per_1000": growth, "errors": errors,
            "delay_p95_s": p95,
        }  # fmt: skip

    # The last floor run had a full garbage collection: it must not decide the ratio.
    runs = [run("floor", 0.40), run("trigger", 0.52), run("floor", 0.42), run("trigger", 0.55)]
    runs += [run("floor", 0.80, growth=3.0), run("trigger", 0.50)]
    runs[1] = run("trigger", 0.52, errors=2, p95=3.0)  # an earlier run's errors and delay still count
    by = medians_by_watcher(runs)
    assert by["floor"]["cpu_ms_per_poll"] == pytest.approx(0.42)
    assert by["trigger"]["cpu_ms_per_poll"] == pytest.approx(0.52)
    assert by["floor"]["repeats"] == 3
    assert (by["trigger"]["errors"], by["trigger"]["delay_p95_s"]) == (2, 3.0)
    ratios = trigger_ratios(by)
    assert ratios["floor"] == pytest.approx(0.52 / 0.42)
    assert ratios["growth"] == pytest.approx(1.0)


def test_repeats_alternate_the_watchers(tmp_path):
    out = tmp_path / "scale.json"
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "trigger_scale.py"),
        *("--n", "2", "--duration", "0.6", "--poll-interval", "0.2", "--repeat", "2"),
        *("--watchers", "floor", "trigger", "--json", str(out)),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    order = [r["watcher"] for r in json.loads(out.read_text())["results"]]
    assert order == ["floor", "trigger", "floor", "trigger"]
