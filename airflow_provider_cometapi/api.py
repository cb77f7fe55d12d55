"""
The calls of the API as data, and the one place URLs are built.

Both paths of ``CometAPIHook`` describe a call as an ``ApiRequest``; only sending differs, and
``airflow_provider_cometapi.responses`` reads what comes back. URLs are built here from the
connection's base URL, never from the ``urls`` a prediction carries (they name
api.replicate.com, not the gateway), and ``redact_url`` is how any URL appears in a message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from airflow_provider_cometapi.exceptions import InvalidInputError
from airflow_provider_cometapi.models import ModelId, check_prediction_id
from airflow_provider_cometapi.settings import DEFAULT_BASE_URL

__all__ = [
    "DEFAULT_BASE_URL",
    "MAX_PREFER_WAIT",
    "ApiRequest",
    "Operation",
    "api_url",
    "redact_url",
    "redact_urls",
]

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
        return f"{self.method} {redact_url(self.path)}"


def api_url(base_url: str, path: str) -> str:
    """Join the connection's base URL (which may carry a path prefix) and an API path."""
    return f"{base_url.rstrip('/')}/{path.lstrip('/')}"


def _segment(value: str) -> str:
    # ':' stays literal so that 'owner/name:version' reads in the path as users wrote it.
    return quote(value, safe=":")


def create_prediction_request(
    model: str | ModelId, model_input: Mapping[str, Any], *, wait: int | None, cancel_after: int | None = None
) -> ApiRequest:
    """
    The create call for ``model``.

    Without ``wait`` it uses the model's own route. With ``wait`` it uses the generic route
    with ``Prefer: wait=N``, where the gateway may hold the request until the prediction is done.
    ``cancel_after`` (whole seconds) sends Replicate's ``Cancel-After: <N>s``: the prediction is
    aborted (not charged) if it has not started by then, canceled if it is still running.
    """
    model_id = model if isinstance(model, ModelId) else ModelId.parse(model)
    deadline: dict[str, str] = {}
    if cancel_after is not None:
        if not isinstance(cancel_after, int) or isinstance(cancel_after, bool) or cancel_after < 1:
            raise InvalidInputError(f"cancel_after must be a whole number of seconds >= 1, got {cancel_after!r}.")
        deadline["Cancel-After"] = f"{cancel_after}s"
    if wait is None:
        path = (
            f"/replicate/v1/models/{_segment(model_id.owner)}/{_segment(model_id.name)}"
            f"{':' + _segment(model_id.version) if model_id.version else ''}/predictions"
        )
        return ApiRequest(
            "POST", path, Operation.CREATE, str(model_id), json={"input": dict(model_input)}, headers=deadline
        )
    if not isinstance(wait, int) or isinstance(wait, bool) or not 1 <= wait <= MAX_PREFER_WAIT:
        raise InvalidInputError(f"wait must be a whole number of seconds from 1 to {MAX_PREFER_WAIT}, got {wait!r}.")
    return ApiRequest(
        "POST",
        "/replicate/v1/predictions",
        Operation.CREATE,
        str(model_id),
        json={"model": str(model_id), "input": dict(model_input)},
        headers={"Prefer": f"wait={wait}", **deadline},
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
    return ApiRequest("GET", url, Operation.DOWNLOAD, redact_url(url))


def same_origin(url: str, base_url: str) -> bool:
    """True when ``url`` is on the gateway itself: only there may the API key be sent."""
    try:
        left, right = urlsplit(url), urlsplit(base_url)
    except ValueError:  # not a URL at all, so not the gateway
        return False
    return (left.scheme, left.netloc.lower()) == (right.scheme, right.netloc.lower())


def redact_url(url: str) -> str:
    """
    A URL as messages show it: no query (signed URLs carry credentials there), no fragment, no
    user info; a ``data:`` URI as its media type and length.
    """
    if url.startswith("data:"):
        return f"{url.split(',', 1)[0][:80]},...({len(url)} chars)"
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))[:300]
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0][:300]


# A URL with a scheme, or any word with a query or fragment, inside free text: a transport
# library's error says "Max retries exceeded with url: /files/x.png?X-Amz-Signature=...".
# Each alternative may start only where a run of its characters starts (the lookbehinds), so a
# long text is scanned once, not once per position: a hostile answer's words can reach here. A
# URL is taken from its scheme's first letter (digits or signs glued before it are kept as they
# are), so that its user info goes too; then any other word with a query or fragment.
_URL_IN_TEXT = re.compile(
    r"""(?<![A-Za-z0-9+.-])(?P<lead>[0-9+.-]*)(?P<url>[A-Za-z][A-Za-z0-9+.-]*://[^\s'"<>]+)"""
    r"""|(?<![^\s'"<>])[^\s'"<>?#]*[?#][^\s'"<>]+"""
)


def _redacted(match: re.Match[str]) -> str:
    if match["url"] is None:
        return redact_url(match[0])
    return match["lead"] + redact_url(match["url"])


def redact_urls(text: str) -> str:
    """``text`` (an error of another library) with every URL in it shown as ``redact_url`` shows it."""
    return _URL_IN_TEXT.sub(_redacted, text)
