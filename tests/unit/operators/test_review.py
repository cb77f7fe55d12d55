"""The review helpers: candidates from a storage result, the Markdown body, publishing copies."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_cometapi.exceptions import InvalidDestinationError
from airflow_provider_cometapi.operators.review import (
    REJECT_ALL,
    ReviewOutputsOperator,
    candidates,
    publish_outputs,
    review_body,
)
from airflow_provider_cometapi.plugins.records import TaskRef

RESULT = ["file:///d/p1_0.webp", "file:///d/p1_1.png", "file:///d/p1.json", "file:///d/p1_2.mp4"]


def test_candidates_are_the_stored_images_in_order():
    assert [(c.label, c.name) for c in candidates(RESULT)] == [
        ("Candidate 1", "p1_0.webp"),
        ("Candidate 2", "p1_1.png"),
    ]
    assert candidates({"uris": RESULT[:1]})[0].uri == RESULT[0]
    assert candidates(None) == [] and candidates(["https://cdn/p1_0.webp"]) == []


def test_the_body_shows_each_candidate_through_the_gallery():
    body = review_body(
        candidates(RESULT), dag_id="d", run_id="manual__x+00:00", outputs_of=TaskRef("store"), intro="Prompt: *a fox*"
    )
    assert body.startswith("Prompt: *a fox*")
    assert "![Candidate 1](/cometapi/gallery/d/manual__x%2B00%3A00/store/files/p1_0.webp)" in body
    assert "![Candidate 2](" in body and REJECT_ALL in body
    mapped = review_body(candidates(RESULT), dag_id="d", run_id="r", outputs_of=TaskRef("store", 3), base_path="/af")
    assert "(/af/cometapi/gallery/d/r/store/files/p1_0.webp?map_index=3)" in mapped


def test_the_operator_chooses_its_own_options_and_body():
    with pytest.raises(TypeError, match="options"):
        ReviewOutputsOperator(task_id="review", outputs_of="store", options=["a"])
    review = ReviewOutputsOperator(task_id="review", outputs_of="store")
    assert review.multiple is True and review.options == [REJECT_ALL]


def test_publish_copies_only_the_chosen_outputs(tmp_path: Path):
    source = tmp_path / "candidates"
    source.mkdir()
    (source / "p1_0.webp").write_bytes(b"zero")
    (source / "p1_1.webp").write_bytes(b"one")
    published = publish_outputs([f"file://{source}/p1_1.webp"], f"file://{tmp_path}/published")
    assert published == [f"file://{tmp_path}/published/p1_1.webp"]
    assert [p.name for p in (tmp_path / "published").iterdir()] == ["p1_1.webp"]
    assert (tmp_path / "published" / "p1_1.webp").read_bytes() == b"one"
    # Again: the same file replaced, nothing else.
    publish_outputs([f"file://{source}/p1_1.webp"], f"file://{tmp_path}/published")
    assert [p.name for p in (tmp_path / "published").iterdir()] == ["p1_1.webp"]


@pytest.mark.parametrize("uri", ["file:///etc/passwd", "file:///d/p1.json", "https://cdn/p1_0.webp"])
def test_publish_refuses_what_is_not_an_output(tmp_path: Path, uri: str):
    with pytest.raises(ValueError, match="not a stored output"):
        publish_outputs([uri], f"file://{tmp_path}/published")


def test_publish_checks_the_destination_first():
    with pytest.raises(InvalidDestinationError):
        publish_outputs(["file:///d/p1_0.webp"], "relative/published")
