"""The review helpers: candidates from a storage result, the Markdown body, publishing copies."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
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


# --- The reviewer's answer (execute_complete), on a fresh operator as after the wait -----------


class StoredResultTaskInstance:
    """The runtime TI as the review asks it: the storage task's result, pulled again on resume."""

    def __init__(self, result):
        self.result = result
        self.pulls: list[dict] = []

    def xcom_pull(self, **kwargs):
        self.pulls.append(kwargs)
        return self.result


def answer(*chosen: str) -> dict:
    return {
        "chosen_options": list(chosen),
        "params_input": {},
        "responded_at": datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
        "responded_by_user": {"id": "1", "name": "reviewer"},
    }


def complete(*chosen: str, result=RESULT):
    review = ReviewOutputsOperator(task_id="review", outputs_of="store", outputs_map_index=2)
    ti = StoredResultTaskInstance(result)
    return review, ti, review.execute_complete({"ti": ti}, answer(*chosen))


def test_the_resumed_review_rebuilds_its_options_and_returns_the_chosen_uris():
    review, ti, decision = complete("Candidate 2")
    assert review.options == ["Candidate 1", "Candidate 2", REJECT_ALL]
    assert ti.pulls == [{"task_ids": "store", "map_indexes": 2}]
    assert decision == {
        "chosen": ["file:///d/p1_1.png"],
        "rejected": False,
        "chosen_options": ["Candidate 2"],
        "responded_by_user": {"id": "1", "name": "reviewer"},
        "responded_at": "2026-01-01T12:00:00+00:00",
    }
    _, _, both = complete("Candidate 2", "Candidate 1")
    assert both["chosen"] == ["file:///d/p1_0.webp", "file:///d/p1_1.png"]  # in the stored order


@pytest.mark.parametrize("chosen", [(REJECT_ALL,), ("Candidate 1", REJECT_ALL), ()])
def test_reject_all_wins_and_an_empty_choice_counts_as_rejected(chosen):
    _, _, decision = complete(*chosen)
    assert decision["rejected"] is True and decision["chosen"] == []
    assert decision["chosen_options"] == list(chosen)


def test_an_option_that_is_not_a_candidate_fails_the_review():
    with pytest.raises(ValueError, match="Candidate 3"):
        complete("Candidate 3")


def test_a_resumed_review_whose_images_are_gone_fails():
    with pytest.raises(ValueError, match="stored no image"):
        complete("Candidate 1", result=None)


# --- The example DAG's publish step on a rejection -----------------------------------------


def test_a_rejection_publishes_nothing_and_emits_no_asset_event(tmp_path: Path):
    from airflow.providers.common.compat.sdk import AirflowSkipException

    dag_file = Path(__file__).resolve().parents[3] / "dags_examples" / "cometapi_review_and_publish.py"
    spec = importlib.util.spec_from_file_location("cometapi_review_and_publish_under_test", dag_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    publish = module.publish.function  # the @task's own function, called as its task would call it

    class RecordingOutletEvents(dict):
        def __getitem__(self, key):
            raise AssertionError(f"an asset event was emitted for {key}")

    _, _, decision = complete(REJECT_ALL)
    root = tmp_path / "root"
    with pytest.raises(AirflowSkipException, match="nothing is published"):
        publish(decision, params={"storage_root": root.as_uri()}, outlet_events=RecordingOutletEvents(), var={})
    assert not root.exists()
