"""
What the sync and async transports share: building requests and reading answers.

Both paths of ``CometAPIHook`` describe a call as an ``ApiRequest`` and turn the answer
(status, headers, body bytes) into JSON or one of the provider's errors with
``read_response``; only sending differs. URLs are built here from the connection's base URL,
never from the ``urls`` a prediction carries (they name api.replicate.com, not the gateway).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any
from urllib.parse import quote, urlsplit

from airflow_provider_cometapi.exceptions import (
    AuthenticationError,
    CometAPIError,
    CometAPIHTTPError,
    GatewayResponseError,
    InsufficientCreditError,
    InvalidInputError,
    ModelNotFoundError,
    NotFoundError,
    OutputExpiredError,
    PredictionNotFoundError,
    RateLimitedError,
    ServerError,
)
from airflow_provider_cometapi.models import ModelId, check_prediction_id

DEFAULT_BASE_URL = "https://api.cometapi.com"
MAX_PREFER_WAIT = 60


class Operation(str, Enum):
    """What a request does; it decides retries and the wording of errors."""

    CREATE = "create"
    GET = "get"
    CANCEL = "cancel"
    LIST_MODELS = "list_models"
    DOWNLOAD = "download"


@dataclass(frozen=True)
class ApiRequest:
    """
    One API call, independent of the HTTP library that sends it.

    ``idempotent`` calls are retried on every transient fault; the others (create, cancel)
    only where the server surely did nothing.
    """

    method: str
    path: str
    operation: Operation
    subject: str = ""
    json: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    read_timeout_extra: float = 0.0

    @property
    def idempotent(self) -> bool:
        return self.method == "GET"

    def describe(self) -> str:
        # Without the query string: a signed file URL must not end up in logs.
        return f"{self.method} {self.path.split('?', 1)[0]}"


def api_url(base_url: str, path: str) -> str:
    """Join the connection's base URL (which may carry a path prefix) and an API path."""
    return f"{base_url.rstrip('/')}/{path.lstrip('/')}"


def _segment(value: str) -> str:
    # ':' stays literal so that 'owner/name:version' reads in the path as users wrote it.
    return quote(value, safe=":")


def create_prediction_request(model: str | ModelId, model_input: Mapping[str, Any], *, wait: int | None) -> ApiRequest:
    """
    The create call for ``model``.

    Without ``wait`` it uses the model's own route. With ``wait`` it uses the generic route
    with ``Prefer: wait=N``, where the gateway may hold the request until the prediction is done.
    """
    model_id = model if isinstance(model, ModelId) else ModelId.parse(model)
    if wait is None:
        path = (
            f"/replicate/v1/models/{_segment(model_id.owner)}/{_segment(model_id.name)}"
            f"{':' + _segment(model_id.version) if model_id.version else ''}/predictions"
        )
        return ApiRequest("POST", path, Operation.CREATE, str(model_id), json={"input": dict(model_input)})
    if not isinstance(wait, int) or isinstance(wait, bool) or not 1 <= wait <= MAX_PREFER_WAIT:
        raise InvalidInputError(f"wait must be a whole number of seconds from 1 to {MAX_PREFER_WAIT}, got {wait!r}.")
    return ApiRequest(
        "POST",
        "/replicate/v1/predictions",
        Operation.CREATE,
        str(model_id),
        json={"model": str(model_id), "input": dict(model_input)},
        headers={"Prefer": f"wait={wait}"},
        read_timeout_extra=float(wait),
    )


def get_prediction_request(prediction_id: str) -> ApiRequest:
    prediction_id = check_prediction_id(prediction_id)
    return ApiRequest("GET", f"/replicate/v1/predictions/{_segment(prediction_id)}", Operation.GET, prediction_id)


def cancel_prediction_request(prediction_id: str) -> ApiRequest:
    prediction_id = check_prediction_id(prediction_id)
    return ApiRequest(
        "POST", f"/replicate/v1/predictions/{_segment(prediction_id)}/cancel", Operation.CANCEL, prediction_id
    )


def list_models_request() -> ApiRequest:
    return ApiRequest("GET", "/v1/models", Operation.LIST_MODELS)


def download_request(url: str) -> ApiRequest:
    """Fetching an output file; ``path`` is the file's absolute URL (it is on a file host)."""
    return ApiRequest("GET", url, Operation.DOWNLOAD, url.split("?", 1)[0])


def same_origin(url: str, base_url: str) -> bool:
    """True when ``url`` is on the gateway itself: only there may the API key be sent."""
    left, right = urlsplit(url), urlsplit(base_url)
    return (left.scheme, left.netloc.lower()) == (right.scheme, right.netloc.lower())


# --- Reading answers ----------------------------------------------------------------------


def connection_named(conn_id: str) -> str:
    """
    How a message names the connection: ``connection '<id>'``, or ``the connection`` for an
    empty id. The Test button tests a copy under a temporary id that would only confuse.
    """
    return f"connection {conn_id!r}" if conn_id else "the connection"


_TAGS = re.compile(r"<[^>]+>")
_SPACES = re.compile(r"\s+")


def read_response(request: ApiRequest, status: int, headers: Mapping[str, str], body: bytes, *, conn_id: str) -> Any:
    """Return the answer's JSON, or raise the error the answer means."""
    payload, parse_error = _parse_json(body)
    if 200 <= status < 300:
        if parse_error is not None:
            advice = (
                "The prediction may have been created: check before running the task again."
                if request.operation is Operation.CREATE
                else "This is a gateway fault; retry later."
            )
            raise GatewayResponseError(
                f"CometAPI answered {request.describe()} with HTTP {status} but the body is not valid JSON "
                f"({parse_error}; starts with {_snippet(body)!r}). {advice}",
                status_code=status,
            )
        return payload
    raise error_for_status(request, status, headers, payload, body, conn_id=conn_id)


def error_for_status(
    request: ApiRequest,
    status: int,
    headers: Mapping[str, str],
    payload: Any,
    body: bytes,
    *,
    conn_id: str,
) -> CometAPIError:
    """Map an HTTP error answer, in either error envelope or none, to the provider's error."""
    detail = _error_detail(payload) or _snippet(body)
    what = f"{request.describe()} failed with HTTP {status}: {detail}"
    if request.operation is Operation.DOWNLOAD and status in (401, 403, 404, 410):
        return OutputExpiredError(
            f"The output file {request.subject} is gone (HTTP {status}): output files expire about an hour "
            "after the prediction finishes. Store outputs in the same DAG run that creates them, right after "
            "the prediction (SavePredictionOutputsOperator downstream of CreatePredictionOperator)."
        )
    if status in (401, 403):
        return AuthenticationError(
            f"CometAPI rejected the API key ({what}). Set a valid key as the password ('API key') "
            f"of {connection_named(conn_id)}; keys are created in the CometAPI console.",
            status_code=status,
            detail=detail,
        )
    if status == 402:
        return InsufficientCreditError(
            f"The CometAPI account has no credit left ({what}). Top up the account of the key in "
            f"{connection_named(conn_id)}, then clear the task.",
            status_code=status,
            detail=detail,
        )
    if status == 404:
        if request.operation is Operation.CREATE:
            return ModelNotFoundError(
                f"Unknown model {request.subject!r} ({what}). Check the model id, for example "
                "'black-forest-labs/flux-schnell'; GET /v1/models lists the models your key can use.",
                status_code=status,
                detail=detail,
            )
        if request.operation in (Operation.GET, Operation.CANCEL):
            return PredictionNotFoundError(
                f"Prediction {request.subject!r} was not found ({what}). Check the id (XCom key "
                f"'prediction_id' of the task that created it) and that {connection_named(conn_id)} uses "
                "the key that created it.",
                status_code=status,
                detail=detail,
            )
        return NotFoundError(
            f"{what}. Check the base URL of {connection_named(conn_id)}.", status_code=status, detail=detail
        )
    if status == 422 or (status == 400 and request.operation is Operation.CREATE):
        fields = _invalid_fields(payload)
        listing = "; ".join(f"{f.get('field', '?')}: {f.get('description', '')}" for f in fields)
        return InvalidInputError(
            f"CometAPI rejected the input for {request.subject or 'the request'} ({what})"
            f"{': ' + listing if listing else ''}. Fix the input and retry.",
            invalid_fields=fields,
            status_code=status,
        )
    if status == 429:
        retry_after = retry_after_seconds(headers, payload)
        return RateLimitedError(
            f"CometAPI throttled {request.describe()} (HTTP 429: {detail})"
            f"{f'; it asked to wait {retry_after:g}s' if retry_after is not None else ''}. "
            "Lower the number of concurrent tasks (for example with an Airflow pool) or raise your rate limit.",
            status_code=status,
            detail=detail,
            retry_after=retry_after,
        )
    if status >= 500:
        error_class = GatewayResponseError if payload is None else ServerError
        return error_class(
            f"The CometAPI gateway failed ({what}). This is usually transient: the task's retries "
            "or a later run should succeed; check CometAPI's status if it persists.",
            status_code=status,
            detail=detail,
        )
    return CometAPIHTTPError(f"CometAPI refused the request ({what}).", status_code=status, detail=detail)


def retry_after_seconds(headers: Mapping[str, str], payload: Any) -> float | None:
    """The server's advice, from the ``Retry-After`` header (seconds or date) or a body field."""
    header = _header(headers, "Retry-After")
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            try:
                from datetime import datetime, timezone

                return max(0.0, (parsedate_to_datetime(header) - datetime.now(timezone.utc)).total_seconds())
            except (TypeError, ValueError):
                pass
    if isinstance(payload, Mapping):
        for container in (payload, payload.get("error")):
            if isinstance(container, Mapping) and isinstance(container.get("retry_after"), int | float):
                return max(0.0, float(container["retry_after"]))
    return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def _parse_json(body: bytes) -> tuple[Any, str | None]:
    if not body:
        return None, "empty body"
    try:
        return json.loads(body), None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, type(exc).__name__


def _error_detail(payload: Any) -> str:
    """The message of a Replicate problem JSON or of an OpenAI-style error envelope."""
    if not isinstance(payload, Mapping):
        return ""
    error = payload.get("error")
    if isinstance(error, Mapping):
        return str(error.get("message") or error.get("code") or "")
    if isinstance(error, str) and error:
        return error
    parts = [str(payload[key]) for key in ("title", "detail") if payload.get(key)]
    return ": ".join(parts) or str(payload.get("message") or "")


def _invalid_fields(payload: Any) -> list[dict[str, Any]]:
    fields = payload.get("invalid_fields") if isinstance(payload, Mapping) else None
    if not isinstance(fields, list):
        return []
    return [dict(f) for f in fields if isinstance(f, Mapping)]


def _snippet(body: bytes, limit: int = 160) -> str:
    text = body[: limit * 4].decode("utf-8", "replace")
    text = _SPACES.sub(" ", _TAGS.sub(" ", text)).strip()
    return text[:limit] or "empty body"
