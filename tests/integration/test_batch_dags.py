"""CreatePredictionBatchOperator in real Airflow runs (dag.test()) against the emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_cometapi.emulator.testing import EmulatorProcess
from tests.fixtures import set_connection
from tests.integration.conftest import DagRunResult
from tests.integration.dags.cometapi_batch_test_dags import ABORTED, FAILING
from tests.integration.test_examples import asset_events, run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small_images():
    """An emulator drawing 64-pixel images: 200 downloads cost milliseconds, not seconds of Pillow."""
    with EmulatorProcess(api_key="test-key", duration=0.5, starting_for=0.1, extra_args=["--image-size", "64"]) as proc:
        yield proc


@pytest.fixture
def batch_emulator(small_images, monkeypatch, tmp_path):
    small_images.reset()
    set_connection(monkeypatch, small_images.connection_dict())
    monkeypatch.setenv("AIRFLOW_VAR_COMETAPI_BATCH_ROOT", tmp_path.as_uri())
    return small_images


def local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def manifest_lines(uri: str) -> list[dict]:
    return [json.loads(line) for line in local(uri).read_text().splitlines()]


def test_200_inputs_throttled_with_failures(dagbag, batch_emulator):
    # The gateway throttles 30 creates (Retry-After 0.1 s): the pace halves, nothing is created twice.
    cometapi_conn = batch_emulator
    cometapi_conn.add_fault(kind="throttle", route="create", count=30, retry_after=0.1)
    result = DagRunResult(dagbag.get_dag("t_batch_200").test())
    assert result.state == "success"
    value = result.xcom("batch")
    unsuccessful = len(FAILING | ABORTED)
    assert value["total"] == 200
    assert value["succeeded"] == 200 - unsuccessful
    assert value["failed"] == unsuccessful
    assert value["predictions"] == 200
    stats = cometapi_conn.stats()
    assert stats["creates"] == 200  # every input once, throttled creates retried without a duplicate
    assert stats["faults_served"] == 30
    lines = manifest_lines(value["manifest"])
    assert [line["index"] for line in lines] == list(range(200))
    assert len({line["prediction_id"] for line in lines}) == 200
    assert set(stats["predictions"]) == {line["prediction_id"] for line in lines}
    for line in lines:
        expected = "failed" if line["index"] in FAILING else "aborted" if line["index"] in ABORTED else "succeeded"
        assert line["status"] == expected, line
        if expected == "succeeded":
            image, sidecar = (local(uri) for uri in line["stored"])
            assert image.read_bytes()[:4] == b"RIFF"  # a whole WebP, under its final name
            assert json.loads(sidecar.read_text())["id"] == line["prediction_id"]
        else:
            assert line["stored"] is None and line["error"]
    folder = local(value["destination"])
    assert not [name for name in folder.iterdir() if ".partial" in name.name]
    assert len(list(folder.glob("*.webp"))) == 200 - unsuccessful
    (event,) = asset_events("t_batch_results", result.dag_run.run_id)
    assert event["manifest"] == value["manifest"] and event["succeeded"] == value["succeeded"]


@pytest.fixture(scope="module")
def examples(airflow_db):
    from tests.integration.conftest import load_dags

    return load_dags(Path(__file__).resolve().parents[2] / "dags_examples")


def test_nightly_batch_example(examples, cometapi_conn, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_COMETAPI_STORAGE_ROOT", tmp_path.as_uri())
    result = run(examples, "cometapi_nightly_batch")
    assert result.state == "success"
    value = result.xcom("generate")
    assert (value["total"], value["succeeded"], value["failed"]) == (10, 10, 0)
    assert cometapi_conn.stats()["creates"] == 10
    ds = result.dag_run.logical_date or result.dag_run.run_after
    folder = tmp_path / "nightly" / ds.strftime("%Y-%m-%d")
    assert value["destination"].rstrip("/").endswith(str(folder))
    assert len(list(folder.glob("*.json"))) == 10  # sidecars
    assert len([p for p in folder.iterdir() if p.suffix in {".webp", ".png"}]) == 11  # one prompt asks for two
    (event,) = asset_events("cometapi_nightly_batch", result.dag_run.run_id)
    assert event["total"] == 10 and event["manifest"] == value["manifest"]
