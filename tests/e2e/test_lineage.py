"""
OpenLineage in a real deployment: the OpenLineage provider's listener on the workers, its file
transport writing each event to a file, and the events read back.

One run of ``e2e_lineage`` (tests/e2e/dags/e2e_lineage_dags.py): a deferred create, a store of its
two images, a batch of three and a batch past the bound of files named one by one. Each task ran in
its own worker process, and the deferred ones resumed in a fresh operator, so what the events say
is what a deployment's lineage backend would get.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_cometapi.emulator import EmulatorProcess
from airflow_provider_cometapi.lineage import MAX_FILE_DATASETS, RUN_FACET_NAME
from tests.e2e.dags.e2e_lineage_dags import LARGE_BATCH, MODEL, SMALL_BATCH
from tests.e2e.harness import REPO, AirflowStack

DAG_ID = "e2e_lineage"
NAMESPACE = "cometapi-e2e"


@pytest.fixture(scope="module")
def lineage_emulator():
    # Small images and quick predictions: 55 downloads in seconds.
    with EmulatorProcess(api_key="e2e-lineage-key-7d2e", duration=3.0, extra_args=["--image-size", "64"]) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def lineage_stack(tmp_path_factory, lineage_emulator):
    home = tmp_path_factory.mktemp("airflow-e2e-lineage")
    (home / "lineage").mkdir()
    env = {
        **lineage_emulator.airflow_env(),
        "AIRFLOW_VAR_COMETAPI_STORAGE_ROOT": (home / "images").as_uri(),
        # One file per event (append from several worker processes could interleave lines).
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(home / "lineage" / "event"), "append": False}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": NAMESPACE,
        # Two worker slots: a loaded CI machine keeps the api-server answering.
        "AIRFLOW__CORE__PARALLELISM": "2",
    }
    with AirflowStack(home, [REPO / "tests" / "e2e" / "dags"], env=env) as running:
        yield running


def wait_for_run(stack: AirflowStack, run_id: str, timeout: float) -> str:
    """Like ``stack.wait_for_run``, polling less and riding out an API call a loaded machine timed out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = str(stack.api("GET", f"dags/{DAG_ID}/dagRuns/{run_id}")["state"])
        except requests.RequestException:
            state = "unknown"
        if state in ("success", "failed"):
            return state
        time.sleep(2)
    raise TimeoutError(f"run {run_id} of {DAG_ID} did not end in {timeout}s")


def task_log(home: Path, run_id: str, task_id: str) -> str:
    """Every try's log of a task, read from the logs folder (the API server may be slow to answer)."""
    folder = home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
    return "\n".join(path.read_text(errors="replace") for path in sorted(folder.glob("attempt=*.log")))


def events_of(home: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted((home / "lineage").glob("event-*.json"))]


def complete(events: list[dict[str, Any]], task_id: str) -> dict[str, Any]:
    (event,) = [e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"] == f"{DAG_ID}.{task_id}"]
    assert event["job"]["namespace"] == NAMESPACE
    return event


def outputs(event: dict[str, Any]) -> list[tuple[str, str]]:
    return [(output["namespace"], output["name"]) for output in event["outputs"]]


def predictions_facet(event: dict[str, Any]) -> dict[str, Any]:
    facet = dict(event["run"]["facets"][RUN_FACET_NAME])
    assert facet.pop("_producer") and facet.pop("_schemaURL")
    return facet


def manifest_of(folder: Path) -> tuple[Path, list[dict[str, Any]]]:
    (manifest,) = folder.glob("*.manifest.jsonl")
    return manifest, [json.loads(line) for line in manifest.read_text().splitlines()]


@pytest.mark.timeout(900)
def test_the_operators_report_their_files_and_predictions(lineage_stack, lineage_emulator):
    run_id = lineage_stack.trigger(DAG_ID)
    state = wait_for_run(lineage_stack, run_id, timeout=600)
    home = lineage_stack.home
    assert state == "success", task_log(home, run_id, "generate")[-3000:]
    # Its COMPLETE event came from the resumed task: a fresh operator in another process.
    assert "Pausing task as DEFERRED" in task_log(home, run_id, "generate")
    images = home / "images" / "lineage"
    events = events_of(home)

    # The create task: its run facet, no files (it stores none). No prices: no cost in the facet.
    generate = complete(events, "generate")
    facet = predictions_facet(generate)
    (prediction_id,) = facet["predictionIds"]
    assert facet == {"model": MODEL, "predictionIds": [prediction_id], "predictionCount": 1, "imageCount": 2}
    assert generate["outputs"] == []

    # The store task: each stored file as an output dataset, named by OpenLineage's local-file rules.
    store = complete(events, "store")
    folder = images / "single"
    assert outputs(store) == [
        ("file", str(folder / f"{prediction_id}_0.webp")),
        ("file", str(folder / f"{prediction_id}_1.webp")),
        ("file", str(folder / f"{prediction_id}.json")),
    ]
    assert all(Path(name).stat().st_size > 0 for _, name in outputs(store))
    assert predictions_facet(store) == facet

    # A small batch: every image and sidecar, then the manifest.
    batch = complete(events, "batch")
    manifest, lines = manifest_of(images / "batch")
    assert len(lines) == SMALL_BATCH
    assert outputs(batch) == [("file", uri.removeprefix("file://")) for line in lines for uri in line["stored"]] + [
        ("file", str(manifest))
    ]
    assert predictions_facet(batch) == {
        "model": MODEL,
        "predictionIds": [line["prediction_id"] for line in lines],
        "predictionCount": SMALL_BATCH,
        "imageCount": SMALL_BATCH,
    }

    # Past the bound: the folder with its file count instead of each file, and the manifest.
    large = complete(events, "large_batch")
    folder = images / "large"
    manifest, lines = manifest_of(folder)
    assert 2 * LARGE_BATCH > MAX_FILE_DATASETS
    assert outputs(large) == [("file", str(folder)), ("file", str(manifest))]
    assert large["outputs"][0]["outputFacets"]["outputStatistics"]["fileCount"] == 2 * LARGE_BATCH
    assert len(list(folder.glob("*.webp"))) == LARGE_BATCH
    facet = predictions_facet(large)
    assert facet["predictionCount"] == LARGE_BATCH == facet["imageCount"]
    assert facet["predictionIds"] == [line["prediction_id"] for line in lines]

    assert lineage_emulator.stats()["creates"] == 1 + SMALL_BATCH + LARGE_BATCH
    # Every event is a valid document of a bounded size.
    assert max(len(json.dumps(event)) for event in events) < 64_000
