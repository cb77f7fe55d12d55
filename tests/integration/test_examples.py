"""Every example DAG loads and runs green under dag.test() against the emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "dags_examples"
EXAMPLE_DAG_IDS = {
    "cometapi_daily_images",
    "cometapi_daily_index",
    "cometapi_edit_chain",
    "cometapi_nightly_batch",
    "cometapi_review_and_publish",
    "cometapi_sensor_pattern",
}


@pytest.fixture(scope="module")
def examples(airflow_db):
    from tests.integration.conftest import load_dags

    return load_dags(EXAMPLES)


@pytest.fixture
def storage_root(tmp_path, monkeypatch):
    """Where the examples store, through the Variable a deployment would set."""
    monkeypatch.setenv("AIRFLOW_VAR_COMETAPI_STORAGE_ROOT", tmp_path.as_uri())
    return tmp_path


def test_examples_load_without_errors(examples):
    assert set(examples.dag_ids) == EXAMPLE_DAG_IDS
    for dag_id in EXAMPLE_DAG_IDS:
        assert set(examples.get_dag(dag_id).tags) == {"cometapi", "example"}


def run(examples, dag_id, **kwargs):
    from tests.integration.conftest import DagRunResult

    return DagRunResult(examples.get_dag(dag_id).test(**kwargs))


def test_daily_images_store_the_batch_and_emit_asset_events(examples, cometapi_conn, storage_root):
    result = run(examples, "cometapi_daily_images")
    assert result.state == "success"
    ds = result.dag_run.logical_date.strftime("%Y-%m-%d")
    folder = storage_root / ds
    emulator = cometapi_conn.stats()
    assert emulator["creates"] == 3  # one per prompt, never more
    ids = set(emulator["predictions"])
    assert {p.name for p in folder.iterdir()} == {f"{i}_0.webp" for i in ids} | {f"{i}.json" for i in ids}
    events = asset_events("cometapi_daily_images", result.dag_run.run_id)
    assert len(events) == 3
    assert {event["prediction_id"] for event in events} == ids
    for event in events:
        assert event["model"] == "black-forest-labs/flux-schnell"
        assert event["prompt"]
        assert event["uris"][0].endswith(f"{event['prediction_id']}_0.webp")
        assert event["sidecar"].endswith(f"{event['prediction_id']}.json")


def test_index_dag_indexes_the_day(examples, cometapi_conn, storage_root):
    images = run(examples, "cometapi_daily_images")
    ds = images.dag_run.logical_date
    result = run(examples, "cometapi_daily_index", logical_date=ds)
    assert result.state == "success"
    folder = storage_root / ds.strftime("%Y-%m-%d")
    index = json.loads((folder / "index.json").read_text())
    assert len(index) == 3
    assert (folder / "index.html").read_text().count("<img") == 3


def test_edit_chain_feeds_the_first_output_to_kontext(examples, cometapi_conn, storage_root):
    result = run(examples, "cometapi_edit_chain")
    assert result.state == "success"
    generated, edited = result.xcom("generate"), result.xcom("edit")
    assert edited["input"]["input_image"] == generated["output"][0]
    assert edited["model"] == "black-forest-labs/flux-kontext-pro"
    stored = {p.name for p in storage_root.rglob("*.*")}
    assert f"{generated['id']}_0.webp" in stored
    assert f"{edited['id']}_0.png" in stored


def test_sensor_pattern(examples, cometapi_conn, storage_root):
    result = run(examples, "cometapi_sensor_pattern")
    assert result.state == "success"
    assert result.xcom("wait")["status"] == "succeeded"
    prediction_id = result.xcom("start", key="prediction_id")
    assert sorted(p.name for p in storage_root.rglob(f"{prediction_id}*")) == [
        f"{prediction_id}.json",
        f"{prediction_id}_0.webp",
        f"{prediction_id}_1.webp",
    ]
    assert cometapi_conn.stats()["creates"] == 1


def test_review_and_publish_stores_the_candidates_from_generate_output(examples, cometapi_conn, storage_root):
    """Up to the human step: dag.test() cannot answer it, so review and publish are marked done."""
    result = run(examples, "cometapi_review_and_publish", mark_success_pattern="review|publish")
    assert result.task_states[("store", -1)] == "success"
    prediction_id = result.xcom("generate", key="prediction_id")
    assert result.xcom("store", key="prediction_id") == prediction_id
    stored = result.xcom("store")
    assert [uri.rsplit("/", 1)[-1] for uri in stored] == [f"{prediction_id}_{i}.webp" for i in range(3)]
    assert all("/candidates/" in uri for uri in stored)
    assert cometapi_conn.stats()["creates"] == 1


def asset_events(asset_name: str, run_id: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == asset_name, AssetEvent.source_run_id == run_id)
        ).all()
        return [dict(row.extra) for row in rows]
