"""The review helpers' errors a DAG author can meet: the provider's, naming the fix (not a raw ValueError)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_cometapi.exceptions import CometAPIError, InvalidParameterError
from airflow_provider_cometapi.operators.review import ReviewOutputsOperator, publish_outputs


class _TaskInstance:
    def __init__(self, stored: Any) -> None:
        self.stored = stored

    def xcom_pull(self, **kwargs: Any) -> Any:
        return self.stored


@pytest.mark.parametrize("stored", [None, [], ["file:///d/p1.json"]])
def test_reviewing_a_task_that_stored_no_image_names_the_fix(stored: Any):
    operator = ReviewOutputsOperator(task_id="review", outputs_of="store")
    with pytest.raises(InvalidParameterError, match="stored no image") as info:
        operator.execute({"ti": _TaskInstance(stored), "dag_run": None})  # type: ignore[arg-type]
    assert isinstance(info.value, CometAPIError | ValueError)
    assert "outputs_of" in str(info.value) and "SavePredictionOutputsOperator" in str(info.value)


def test_publishing_what_is_not_an_output_names_the_fix(tmp_path: Path):
    with pytest.raises(InvalidParameterError, match="not a stored output") as info:
        publish_outputs(["file:///etc/passwd"], f"file://{tmp_path}/published")
    assert "'chosen'" in str(info.value) and "SavePredictionOutputsOperator" in str(info.value)
