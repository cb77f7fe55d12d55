"""A batch's manifest is read once for a page and the images on it, not once per image."""

from __future__ import annotations

import json

import pytest

from airflow_provider_cometapi.plugins import files
from airflow_provider_cometapi.plugins.manifests import ManifestCache
from airflow_provider_cometapi.plugins.records import TaskRef
from tests.gallery import gallery_over_records

BATCH = TaskRef("batch")
IMAGES = 500


def write_batch(folder, count: int = IMAGES) -> dict:
    lines = []
    for i in range(count):
        image = folder / f"b{i}_0.png"
        image.write_bytes(b"\x89PNG-%d" % i)
        lines.append(
            {"index": i, "input": {"prompt": f"fox {i}"}, "prediction_id": f"b{i}", "status": "succeeded",
             "outputs": [], "stored": [image.as_uri()]}
        )  # fmt: skip
    manifest = folder / "nightly.manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return {"manifest": manifest.as_uri(), "total": count, "succeeded": count, "failed": 0}


@pytest.fixture
def run_of(monkeypatch):
    """The gallery app, signed in, over a run whose only record is ``values`` (a batch's result)."""
    with gallery_over_records(monkeypatch) as gallery:
        yield gallery


def test_a_page_of_500_batch_images_and_their_500_files_read_the_manifest_once(run_of, tmp_path):
    run_of.values.append((BATCH, write_batch(tmp_path)))
    page = run_of.client.get("/gallery/d/r/batch", params={"per_page": IMAGES})
    assert page.status_code == 200 and page.text.count("<figure") == IMAGES
    for i in range(IMAGES):
        answer = run_of.client.get(f"/gallery/d/r/batch/files/b{i}_0.png")
        assert answer.status_code == 200 and answer.content == b"\x89PNG-%d" % i
    assert len(run_of.reads) == 1, f"the manifest was read {len(run_of.reads)} times"


def test_only_files_the_manifest_recorded_are_served_from_the_cache(run_of, tmp_path):
    run_of.values.append((BATCH, write_batch(tmp_path, 3)))
    (tmp_path / "x9_0.png").write_bytes(b"not recorded")
    assert run_of.client.get("/gallery/d/r/batch/files/b1_0.png").status_code == 200
    assert run_of.client.get("/gallery/d/r/batch/files/x9_0.png").status_code == 404
    assert run_of.client.get("/gallery/d/r/other/files/b1_0.png").status_code == 404  # another task's records
    assert len(run_of.reads) == 1


def test_a_rewritten_manifest_is_read_again(run_of, tmp_path):
    run_of.values.append((BATCH, write_batch(tmp_path, 2)))
    assert run_of.client.get("/gallery/d/r/batch/files/b2_0.png").status_code == 404
    run_of.values[:] = [(BATCH, write_batch(tmp_path, 3))]  # the batch went on: a longer manifest
    assert run_of.client.get("/gallery/d/r/batch/files/b2_0.png").status_code == 200
    assert len(run_of.reads) == 2


def test_the_cache_is_bounded_in_manifests_and_records(tmp_path):
    texts = {f"file:///m/{i}.jsonl": json.dumps({"prediction_id": f"p{i}", "status": "failed"}) for i in range(6)}
    cache = ManifestCache(stamp=lambda uri: (1,), max_manifests=2)
    results = [{"manifest": uri, "total": 1, "succeeded": 0, "failed": 1} for uri in texts]
    for i, result in enumerate(results):
        assert [record.prediction_id for record in cache(result, BATCH, texts.__getitem__)] == [f"p{i}"]
    cache(results[-1], BATCH, texts.__getitem__)  # still kept
    cache(results[0], BATCH, texts.__getitem__)  # evicted long ago
    assert cache.reads == 7 and len(cache._entries) == 2

    small = ManifestCache(stamp=lambda uri: (1,), max_records=0)  # nothing fits: read every time
    small(results[0], BATCH, texts.__getitem__)
    small(results[0], BATCH, texts.__getitem__)
    assert small.reads == 2 and not small._entries


def test_a_manifest_that_cannot_be_stamped_or_read_shows_nothing(tmp_path):
    result = {"manifest": (tmp_path / "gone.jsonl").as_uri(), "total": 1, "succeeded": 1, "failed": 0}
    assert list(ManifestCache()(result, BATCH, files.open_text)) == []
    assert list(ManifestCache(stamp=lambda uri: (1,))(result, BATCH, files.open_text)) == []
    assert list(ManifestCache()({"manifest": "https://x/m.jsonl", **result}, BATCH, files.open_text)) == []
