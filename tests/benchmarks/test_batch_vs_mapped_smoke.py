"""The batch-vs-mapped and faults-mid-batch benchmarks' code paths, fast: their DAGs load as the
two designs, the figures add up, and the page is written from the template with every
hand-written section kept. ``make bench`` runs the real thing (a deployment on PostgreSQL); so
does the last test here, when ``BENCH_DEPLOYMENT=1`` (it takes minutes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.e2e.harness import REPO

BENCHMARKS = REPO / "benchmarks"


@pytest.fixture
def modules(monkeypatch):
    """The benchmark scripts, imported as they import each other (``_shared`` beside them)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import batch_faults
    import batch_vs_mapped
    import report

    return batch_vs_mapped, batch_faults, report


def test_the_two_designs_load():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(BENCHMARKS / "dags" / "bench_batch_vs_mapped.py"))
    assert bag.import_errors == {}
    mapped, batch = bag.dags["bench_mapped"], bag.dags["bench_batch"]
    assert sorted(mapped.task_ids) == ["generate", "prompts", "store"]
    assert sorted(batch.task_ids) == ["generate", "prompts"]
    # Mapped: a task instance per prompt to create and one to store; the batch: one for all.
    assert mapped.get_task("generate").is_mapped and mapped.get_task("store").is_mapped
    assert not batch.get_task("generate").is_mapped
    assert type(batch.get_task("generate")).__name__ == "CreatePredictionBatchOperator"
    assert type(mapped.get_task("store")).__name__ == "MappedOperator"


def design(name: str, n: int, wall: float, slot_s: float, per_table: dict[str, dict[str, int]]) -> dict[str, Any]:
    mapped = name == "mapped"
    return {
        "design": name,
        "state": "success",
        "wall_s": wall,
        "task_instances": 1 + (2 * n if mapped else 1),
        "deferrals": n if mapped else 1,
        "retries": 0,
        "failed_task_instances": 0,
        "states": {"success": 1 + (2 * n if mapped else 1)},
        "worker_slot_s": slot_s,
        "running_s": slot_s / 2,
        "rows_written": sum(d["ins"] + d["upd"] for d in per_table.values()),
        "per_table": per_table,
        "creates": n,
        "stored": {"images": n, "broken_images": 0, "sidecars": n, "manifests": 0 if mapped else 1, "partials": 0},
    }


def test_rows_written_are_the_difference_and_background_is_apart(modules):
    batch_vs_mapped, _, _ = modules
    before = {"task_instance": {"ins": 5, "upd": 10, "del": 0}, "job": {"ins": 0, "upd": 100, "del": 0}}
    after = {
        "task_instance": {"ins": 25, "upd": 70, "del": 0},
        "job": {"ins": 0, "upd": 160, "del": 0},
        "xcom": {"ins": 40, "upd": 0, "del": 2},
        "dag": {"ins": 0, "upd": 3, "del": 0},
    }
    writes = batch_vs_mapped.writes_between(before, after)
    assert writes["rows_written"] == 20 + 60 + 60 + 40 + 3
    assert writes["run_rows_written"] == 20 + 60 + 40  # heartbeats (job) and parses (dag) apart
    assert writes["rows_deleted"] == 2
    assert list(writes["per_table"]) == ["task_instance", "job", "xcom", "dag"]  # most written first


def test_the_ratio_and_its_verdict(modules):
    batch_vs_mapped, _, _ = modules
    n = 10
    results = {
        "batch": design("batch", n, 30.0, 20.0, {}),
        "mapped": design("mapped", n, 200.0, 300.0, {}),
    }
    verdict = batch_vs_mapped.verdict(results, n)
    assert verdict["ratio"] == pytest.approx(0.15) and verdict["held"] is True and verdict["complete"] is True
    results["batch"]["wall_s"] = 60.0
    assert batch_vs_mapped.verdict(results, n)["held"] is False
    results["mapped"]["stored"]["images"] = n - 1  # an output missing: not a complete comparison
    assert batch_vs_mapped.verdict(results, n)["complete"] is False


def faults_figures(**changes: Any) -> dict[str, Any]:
    figures = {
        "test": "tests/e2e/test_batch.py",
        "started": "2026-12-01T13:00:00+00:00",
        "outcome": "passed",
        "duration_s": 120.0,
        "inputs": 30,
        "creates": 30,
        "cancels": 0,
        "creates_before_first_kill": 3,
        "triggerer_restarts": 1,
        "stored_at_second_kill": 2,
        "downloads_at_second_kill": 4,
        "manifest": {"manifests": 1, "lines": 30, "inputs_listed_once": 30, "stored_uris_missing": 0},
        "stored": {"images": 30, "broken_images": 0, "sidecars": 30, "partials": 0},
    }
    return figures | changes


def test_the_faults_goals(modules):
    _, batch_faults, _ = modules
    assert all(held for _, _, held in batch_faults.goals(faults_figures()))
    held = {goal: ok for goal, _, ok in batch_faults.goals(faults_figures(creates=31))}
    assert held["creates equal inputs"] is False and held["the final manifest lists every input once"] is True
    broken = faults_figures(stored={"images": 30, "broken_images": 1, "sidecars": 30, "partials": 0})
    assert not dict((goal, ok) for goal, _, ok in batch_faults.goals(broken))["every stored file is whole"]


def test_the_page_keeps_its_hand_written_sections(modules, tmp_path):
    batch_vs_mapped, batch_faults, report = modules
    n = 10
    per_table = {"task_instance": {"ins": 21, "upd": 300, "del": 0}, "job": {"ins": 0, "upd": 99, "del": 0}}
    results = {
        "batch": design("batch", n, 30.0, 20.0, per_table),
        "mapped": design("mapped", n, 200.0, 300.0, per_table),
    }
    bvm = {
        "n": n,
        "prediction_seconds": 5.0,
        "image_size": 128,
        "slots": 2,
        "cpus": 2,
        "started": "2026-12-01T13:00:00+00:00",
        "results": results,
        **batch_vs_mapped.verdict(results, n),
    }
    faults = faults_figures(creates=31)
    faults["goals"] = batch_faults.goals(faults)
    (tmp_path / "bvm.json").write_text(json.dumps(bvm))
    (tmp_path / "faults.json").write_text(json.dumps(faults))
    page = tmp_path / "performance.md"
    arguments = ["--batch-vs-mapped", str(tmp_path / "bvm.json"), "--batch-faults", str(tmp_path / "faults.json")]
    assert report.main([*arguments, "--out", str(page), "--command", "make bench"]) == 0
    text = page.read_text()
    assert "{{" not in text and "The template of docs/performance.md" not in text
    assert "```bash\nmake bench\n```" in text
    # Generated: both designs, the ratio and its verdict; the faults' goals, one not held.
    assert "| wall time, s | 200.0 | 30.0 | 0.150 |" in text
    assert "| task instances | 21 | 2 | 0.095 |" in text
    assert "| task executions (started, resumes, retries) | 31 | 3 | 0.097 |" in text  # 1 + 3N, 1 + 2
    assert "**Goal: batch wall time ≤ 0.25x mapped: 0.150x, held.**" in text
    assert "| creates equal inputs | 31 creates for 30 inputs (0 cancels) | **not held** |" in text
    assert "- faults mid-batch: creates equal inputs" in text
    # Kept from the template: the hand-written sections, and a line for each benchmark not run.
    template = report.TEMPLATE.read_text()
    for heading in (line for line in template.splitlines() if line.startswith("#")):
        assert heading in text.splitlines(), heading
    assert "Why the rate is not held." in text
    assert "_No `batch_scale` results were given to `benchmarks/report.py` for this page" in text

    # Written again with the faults only: the batch-vs-mapped section is kept as it was, its miss too.
    faults = faults_figures()
    faults["goals"] = batch_faults.goals(faults)
    (tmp_path / "faults.json").write_text(json.dumps(faults))
    again = report.write_page({"batch_faults": faults}, page, "make bench")
    kept = page.read_text()
    assert "| wall time, s | 200.0 | 30.0 | 0.150 |" in kept
    assert "| creates equal inputs | 30 creates for 30 inputs (0 cancels) | held |" in kept
    assert again == [] and "None: every target above holds." in kept


@pytest.mark.skipif(os.environ.get("BENCH_DEPLOYMENT") != "1", reason="a real deployment: BENCH_DEPLOYMENT=1")
def test_a_small_run_in_a_real_deployment(tmp_path):
    out = tmp_path / "bvm.json"
    command = [sys.executable, str(BENCHMARKS / "batch_vs_mapped.py"), "--n", "3", "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    figures = json.loads(out.read_text())
    for name, tis in (("batch", 2), ("mapped", 7)):
        r = figures["results"][name]
        assert r["state"] == "success" and r["task_instances"] == tis, name
        assert r["creates"] == 3 and r["stored"]["images"] == 3 and r["stored"]["broken_images"] == 0, name
        assert r["worker_slot_s"] > 0 and r["run_rows_written"] > 0, name
    assert figures["results"]["mapped"]["deferrals"] == 3
