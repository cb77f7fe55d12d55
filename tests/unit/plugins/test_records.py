"""The gallery's decisions on recorded values: which records, which cards, which files may be opened."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from airflow_provider_cometapi.plugins.pages import Links, gallery_page
from airflow_provider_cometapi.plugins.records import (
    PredictionInfo,
    StoredFile,
    TaskRef,
    assemble,
    for_task,
    is_store_uri,
    page_of,
    read_all,
    stored_file,
)

GENERATE, STORE = TaskRef("generate"), TaskRef("store")
PREDICTION = {
    "id": "p1",
    "status": "succeeded",
    "model": "black-forest-labs/flux-schnell",
    "input": {"prompt": "a fox", "seed": 42, "aspect_ratio": "16:9", "input_image": "file:///data/q9_0.png"},
    "output": ["https://cdn.example/p1/0.webp?sig=abc", "https://cdn.example/p1/1.webp?sig=abc"],
    "created_at": "2026-01-01T00:00:00Z",
}
# Half an hour after PREDICTION was created: its gateway URLs still work.
BEFORE_EXPIRY = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
STORED = ["file:///data/run/p1_0.webp", "file:///data/run/p1_1.webp", "file:///data/run/p1.json"]


def no_text(uri: str) -> str:
    raise AssertionError(f"no file is opened to read XComs, asked for {uri}")


def cards_of(*values: tuple[TaskRef, object]):
    return assemble(read_all(values, no_text))


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("file:///data/run/p1_0.webp", ("p1", 0)),
        ("/data/run/p1_12.png", ("p1", 12)),
        ("s3://aws_default@bucket/run/p-1_0.jpg", ("p-1", 0)),
        ("file:///data/run/p1.json", ("p1", None)),
        ("https://cdn.example/p1_0.webp", None),  # never fetched on a request's behalf
        ("http://169.254.169.254/latest/p1_0.png", None),
        ("data:image/png;base64,AAAA", None),
        ("memory://x/p1_0.png", None),
        ("file:///etc/passwd", None),  # not an output's or a sidecar's name
        ("file:///data/run/p1_0.html", None),  # not a media extension
        ("file:///data/run/p1_0.svg", None),
        ("file:///data/run/p1_0.bin", None),
        ("file:///data/run/p1_0.webp\x00.png", None),
        ("relative/p1_0.png", None),
        ("not a uri p1_0.png", None),
    ],
)
def test_only_outputs_and_sidecars_in_a_store_are_files(uri: str, expected: tuple[str, int | None] | None):
    found = stored_file(uri, STORE)
    assert (None if found is None else (found.prediction_id, found.index)) == expected


def test_schemes_that_fetch_are_not_stores():
    assert is_store_uri("gs://google_cloud_default@bucket/x")
    assert not any(is_store_uri(u) for u in ("https://x/y", "http://x/y", "data:,x", "github://x/y", "zip://x"))


def test_a_stored_prediction_is_one_card_per_output_with_its_metadata():
    cards = cards_of((GENERATE, "p1"), (GENERATE, PREDICTION), (STORE, STORED))
    assert [(c.key, c.stored, c.expiring, c.status) for c in cards] == [
        ("p1_0", True, False, "succeeded"),
        ("p1_1", True, False, "succeeded"),
    ]
    assert cards[0].info is not None and cards[0].info.input["seed"] == 42
    assert cards[0].tasks == (GENERATE, STORE)
    assert cards[0].sidecar is not None and cards[0].sidecar.is_sidecar
    # The input_image names another prediction's output: used by this task, not stored by it.
    assert all(c.prediction_id == "p1" for c in cards)


def test_an_output_not_stored_is_shown_from_the_gateway_as_expiring():
    (first, second) = cards_of((GENERATE, PREDICTION))
    assert first.expiring and first.url == PREDICTION["output"][0]
    assert second.url == PREDICTION["output"][1]


def test_expired_outputs_are_not_linked():
    expired = {**PREDICTION, "output": None, "data_removed": True}
    (card,) = cards_of((GENERATE, expired))
    assert card.index is None and card.url is None


def test_a_failed_prediction_is_a_card_with_its_error():
    failed = {**PREDICTION, "status": "failed", "output": None, "error": "NSFW content detected"}
    (card,) = cards_of((GENERATE, failed))
    assert card.failed and card.info is not None and card.info.error == "NSFW content detected"


def test_a_bare_prediction_id_is_a_card_of_its_own():
    (card,) = cards_of((GENERATE, "p9"))
    assert card.key == "p9" and card.info is not None and card.info.status is None


def test_a_mapped_tasks_cards_are_filtered_by_map_index():
    values = [
        (TaskRef("generate", i), {**PREDICTION, "id": f"m{i}", "output": [f"https://x/{i}.webp"]}) for i in range(3)
    ]
    cards = cards_of(*values)
    assert [c.prediction_id for c in for_task(cards, "generate", 1)] == ["m1"]
    assert len(for_task(cards, "generate", None)) == 3
    assert for_task(cards, "other", None) == []


def test_an_output_copied_by_two_tasks_is_one_card_with_two_copies():
    published = ["file:///data/published/p1_1.webp"]
    cards = cards_of((STORE, STORED), (TaskRef("publish"), published))
    (copy,) = [c for c in cards if c.index == 1]
    assert [f.uri for f in copy.files] == [STORED[1], published[0]]
    assert copy.file_for(TaskRef("publish")) == StoredFile(published[0], TaskRef("publish"), "p1", 1)
    assert copy.file_for(None) == copy.files[0]


def test_asset_event_extras_and_structured_results_are_read():
    extra = {"prediction_id": "p1", "model": "m", "prompt": "a fox", "uris": STORED[:2], "sidecar": STORED[2]}
    assert [c.key for c in cards_of((STORE, extra))] == ["p1_0", "p1_1"]
    assert [c.key for c in cards_of((STORE, {"outputs": STORED[:1], "sidecar": STORED[2]}))] == ["p1_0"]


def test_cards_are_in_creation_order():
    later = {**PREDICTION, "id": "p2", "created_at": "2026-01-02T00:00:00Z", "output": ["https://x/a.webp"]}
    earlier = {**PREDICTION, "id": "p3", "created_at": "2025-12-31T00:00:00Z", "output": ["https://x/b.webp"]}
    assert [c.prediction_id for c in cards_of((GENERATE, later), (GENERATE, earlier))] == ["p3", "p2"]


def test_pages_are_clamped():
    cards = cards_of(*[(TaskRef("g", i), {**PREDICTION, "id": f"x{i}", "output": ["https://x/a"]}) for i in range(7)])
    assert (page_of(cards, 2, 3).number, len(page_of(cards, 2, 3).cards), page_of(cards, 2, 3).count) == (2, 3, 3)
    assert page_of(cards, 99, 3).number == 3
    assert len(page_of(cards, 1, 10_000).cards) == 7
    assert page_of([], 1, 60).count == 1


def test_a_page_of_500_images_is_built_fast():
    """500 stored outputs: reading, assembling and rendering one page of all of them, no file opened."""
    stored = [f"s3://aws@bucket/run/p{i}_0.webp" for i in range(500)]
    predictions = [(TaskRef("g", i), {**PREDICTION, "id": f"p{i}"}) for i in range(500)]
    started = time.perf_counter()
    cards = assemble(read_all([*predictions, (STORE, stored)], no_text))
    html = gallery_page(page_of(cards, 1, 500), Links("/cometapi", "d", "r"), {}, now=BEFORE_EXPIRY)
    elapsed = time.perf_counter() - started
    assert html.count("<figure") == 500 and html.count('loading="lazy"') == 500
    assert elapsed < 2.0, f"{elapsed:.2f}s"  # about 0.05 s on a laptop; generous for a shared CI core


def test_prediction_info_refuses_ids_that_are_not_ids():
    assert cards_of((GENERATE, {**PREDICTION, "id": "../../etc"})) == []
    assert isinstance(read_all([(GENERATE, "p1")], no_text)[0], PredictionInfo)


def test_a_batch_shows_every_prediction_and_stored_file_of_its_manifest(tmp_path):
    import json

    from airflow_provider_cometapi.plugins.files import open_text

    lines = [
        {"index": 0, "input": {"prompt": "a fox"}, "prediction_id": "b1", "status": "succeeded",
         "outputs": ["https://cdn.example/b1/0.webp"], "stored": [(tmp_path / "b1_0.webp").as_uri()]},
        {"index": 1, "input": {"prompt": "a owl"}, "prediction_id": "b2", "status": "failed", "error": "NSFW"},
        {"index": 2, "input": {"prompt": "later"}, "prediction_id": None, "status": "pending"},
        {"index": 3, "prediction_id": "../evil", "status": "succeeded", "stored": ["file:///etc/passwd"]},
    ]  # fmt: skip
    manifest = tmp_path / "nightly.manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\nnot json\n")
    result = {"manifest": manifest.as_uri(), "total": 4, "succeeded": 1, "failed": 1}
    cards = assemble(read_all([(TaskRef("batch"), result)], open_text))
    assert [(c.key, c.stored, c.status) for c in cards] == [("b1_0", True, "succeeded"), ("b2", False, "failed")]
    assert cards[0].info is not None and cards[0].info.input["prompt"] == "a fox"
    assert cards[1].info is not None and cards[1].info.error == "NSFW"


def test_a_batch_without_destination_shows_its_urls_expired_an_hour_after_they_ended(tmp_path):
    import json

    from airflow_provider_cometapi.plugins.files import open_text

    line = {
        "index": 0, "input": {"prompt": "a fox"}, "prediction_id": "b1", "status": "succeeded",
        "outputs": ["https://cdn.example/b1/0.webp"], "stored": None, "completed_at": "2026-01-01T00:00:05Z",
    }  # fmt: skip
    manifest = tmp_path / "nightly.manifest.jsonl"
    manifest.write_text(json.dumps(line) + "\n")
    result = {"manifest": manifest.as_uri(), "total": 1, "succeeded": 1, "failed": 0}
    (card,) = assemble(read_all([(TaskRef("batch"), result)], open_text))
    assert card.expiring and card.expires_at == datetime(2026, 1, 1, 1, 0, 5, tzinfo=UTC)
    assert card.expired(datetime(2026, 1, 1, 2, tzinfo=UTC))


def test_a_batch_whose_manifest_is_gone_shows_nothing_and_breaks_nothing(tmp_path):
    from airflow_provider_cometapi.plugins.files import open_text

    result = {"manifest": (tmp_path / "gone.jsonl").as_uri(), "total": 1, "succeeded": 1, "failed": 0}
    assert read_all([(TaskRef("batch"), result)], open_text) == []
    # A manifest URI that is not a store's is never opened.
    assert read_all([(TaskRef("batch"), {**result, "manifest": "https://x/m.jsonl"})], no_text) == []


def test_cards_of_a_large_batch_are_assembled_in_linear_time():
    """20,000 stored predictions: scanning every stored file per prediction would take minutes."""
    records = []
    for i in range(20_000):
        records += [
            PredictionInfo(f"p{i}", GENERATE, status="succeeded"),
            StoredFile(f"/d/p{i}_0.png", STORE, f"p{i}", 0),
        ]
    started = time.perf_counter()
    cards = assemble(records)
    elapsed = time.perf_counter() - started
    assert len(cards) == 20_000 and all(card.stored for card in cards[:3])
    assert elapsed < 5.0, f"{elapsed:.2f}s"  # about 0.1 s


def test_an_unstored_output_expires_an_hour_after_its_prediction_completed():
    completed = {**PREDICTION, "completed_at": "2026-01-01T00:00:05.123456Z"}
    (card, _) = cards_of((GENERATE, completed))
    assert card.expires_at == datetime(2026, 1, 1, 1, 0, 5, 123456, tzinfo=UTC)
    assert not card.expired(datetime(2026, 1, 1, 1, 0, 5, tzinfo=UTC))
    assert card.expired(datetime(2026, 1, 1, 1, 0, 6, tzinfo=UTC))
    # Without a completion time, from its creation; with neither, never said to be expired.
    (created_only, _) = cards_of((GENERATE, PREDICTION))
    assert created_only.expires_at == datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    (unknown, _) = cards_of((GENERATE, {**PREDICTION, "created_at": "yesterday"}))
    assert unknown.expires_at is None and not unknown.expired(datetime(2099, 1, 1, tzinfo=UTC))
    # A stored output does not expire.
    (stored, _) = cards_of((GENERATE, PREDICTION), (STORE, STORED))
    assert stored.expires_at is None and not stored.expired(datetime(2099, 1, 1, tzinfo=UTC))
