"""What the run loader adds to records: the request a task rendered, for a prediction recorded without it."""

from __future__ import annotations

from airflow_provider_cometapi.plugins.records import PredictionInfo, StoredFile, TaskRef
from airflow_provider_cometapi.plugins.runs import _with_request

TASK = TaskRef("doomed")
RENDERED = {TASK: {"model": "black-forest-labs/flux-schnell", "input": {"prompt": "a forbidden picture"}}}


def test_a_failed_prediction_record_takes_the_prompt_its_task_rendered():
    record = PredictionInfo("p7", TASK, status="failed", model="gateway/model", error="NSFW content detected")
    filled = _with_request(record, RENDERED)
    assert isinstance(filled, PredictionInfo)
    assert filled.input == {"prompt": "a forbidden picture"}
    assert (filled.model, filled.status, filled.error) == ("gateway/model", "failed", "NSFW content detected")


def test_a_bare_id_takes_the_model_and_input_and_a_full_result_keeps_its_own():
    bare = _with_request(PredictionInfo("p7", TASK), RENDERED)
    assert isinstance(bare, PredictionInfo) and bare.model == "black-forest-labs/flux-schnell"
    full = PredictionInfo("p7", TASK, status="succeeded", input={"prompt": "what the gateway ran"})
    assert _with_request(full, RENDERED) is full
    stored = StoredFile("file:///d/p7_0.png", TASK, "p7", 0)
    assert _with_request(stored, RENDERED) is stored
    assert _with_request(PredictionInfo("p8", TaskRef("other")), RENDERED) == PredictionInfo("p8", TaskRef("other"))
