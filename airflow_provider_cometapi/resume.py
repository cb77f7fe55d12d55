"""
Pick up the prediction an earlier try of the same task created, instead of paying for another.

Airflow 3.3 keeps a small key-value store per task instance that survives retries (the task
state store). ``CreatePredictionOperator`` records there which prediction it created, for which
request, right after creating it. A later try (after a worker crash, a broken wait, a retry)
reads the record back and asks CometAPI how that prediction is doing:

- still running: wait for it;
- succeeded with its files still downloadable: return it;
- failed, canceled, aborted, expired, unknown to the gateway, or made for another request
  (the DAG's model or input changed since): create a fresh prediction.

On older Airflow there is no store and every try creates a new prediction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Protocol

from airflow_provider_cometapi.exceptions import PredictionNotFoundError
from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
from airflow_provider_cometapi.models import Prediction
from airflow_provider_cometapi.retry import LoggerLike

# Renaming this breaks the resumption of tries already recorded under the old key.
RESUME_KEY = "cometapi_prediction"


class TaskStateStore(Protocol):
    """What this module needs of Airflow's ``context["task_state_store"]``."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...


def request_fingerprint(model: str, input: Mapping[str, Any]) -> str:
    """A digest of what was asked, so a record is only reused for the same request."""
    canonical = json.dumps({"model": model, "input": input}, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def remember(store: TaskStateStore, prediction_id: str, fingerprint: str) -> None:
    store.set(RESUME_KEY, {"prediction_id": prediction_id, "request": fingerprint})


def forget(store: TaskStateStore) -> None:
    """Once the task has its result, a later clear of the task asks for a new prediction."""
    store.delete(RESUME_KEY)


def resumable_prediction(
    store: TaskStateStore, hook: CometAPIHook, fingerprint: str, log: LoggerLike
) -> Prediction | None:
    """
    The prediction an earlier try created for this same request, if it is worth resuming.

    Errors other than "not found" propagate: creating a new prediction because the gateway
    could not be asked about the old one would be the duplicate this module exists to avoid.
    """
    record = store.get(RESUME_KEY)
    if not isinstance(record, Mapping) or not isinstance(record.get("prediction_id"), str):
        return None
    prediction_id: str = record["prediction_id"]
    if record.get("request") != fingerprint:
        log.info(
            "An earlier try created prediction %s for a different model or input; creating a new one.", prediction_id
        )
        return None
    try:
        prediction = hook.get_prediction(prediction_id)
    except PredictionNotFoundError:
        log.warning("Prediction %s of an earlier try is unknown to CometAPI; creating a new one.", prediction_id)
        return None
    if prediction.succeeded and (prediction.data_removed or not prediction.output):
        log.info("Prediction %s of an earlier try succeeded but its files expired; creating a new one.", prediction_id)
        return None
    if prediction.is_terminal and not prediction.succeeded:
        log.info("Prediction %s of an earlier try ended %s; creating a new one.", prediction_id, prediction.status)
        return None
    log.info(
        "Resuming prediction %s (%s) created by an earlier try of this task instead of creating a new one.",
        prediction_id,
        prediction.status,
    )
    return prediction
