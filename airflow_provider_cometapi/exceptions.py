"""
The provider's errors: one hierarchy, each message saying what happened and what to do.

Every error a DAG author can meet derives from ``CometAPIError``, itself an
``AirflowException``, so a task fails with the message below. Two class attributes drive the
shared retry policy (``airflow_provider_cometapi.retry``):

* ``transient``: the same request may succeed later (throttling, 5xx, timeouts, resets);
* ``nothing_created``: the server surely did not act on the request, so even a prediction
  create may be sent again without risking a second, paid prediction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException


class CometAPIError(AirflowException):
    """Base class of every error raised by this provider."""

    transient: bool = False
    nothing_created: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --- Problems detected locally, before any request ----------------------------------------


class CometAPIConfigurationError(CometAPIError):
    """The connection is missing or incomplete (no API key, bad base URL)."""


class InvalidModelIdError(CometAPIError, ValueError):
    """A model id that is not ``owner/name`` or ``owner/name:version``."""


class InvalidPredictionIdError(CometAPIError, ValueError):
    """A prediction id that cannot be one (empty, or with characters ids never have)."""


class InvalidParameterError(CometAPIError, ValueError):
    """An operator, sensor or trigger argument that cannot work (a timeout of 0, an interval of NaN)."""


class InvalidDestinationError(InvalidParameterError):
    """A storage destination that is empty, relative, not a path or URI, or cannot hold a worker's files."""


class InvalidInputError(CometAPIError, ValueError):
    """
    The prediction input is invalid, found locally or answered by the API with HTTP 422.

    :ivar invalid_fields: one ``{"field", "description"}`` mapping per bad field.
    """

    def __init__(
        self,
        message: str,
        *,
        invalid_fields: Sequence[Mapping[str, Any]] = (),
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.invalid_fields = [dict(field) for field in invalid_fields]
        self.http_status = status_code


# --- Transport failures: no usable HTTP answer --------------------------------------------


class CometAPIConnectionError(CometAPIError):
    """
    No answer from the server: refused, reset, DNS failure.

    ``request_sent`` is False only when the connection was never established (refused, connect
    timeout): then the server cannot have seen the request and even a create is safe to repeat.
    """

    transient = True

    def __init__(self, message: str, *, request_sent: bool) -> None:
        super().__init__(message)
        self.request_sent = request_sent
        self.nothing_created = not request_sent


class CometAPITimeoutError(CometAPIError):
    """The server accepted the request but did not answer in time; it may have acted on it."""

    transient = True


# --- HTTP answers that are errors ---------------------------------------------------------


class CometAPIHTTPError(CometAPIError):
    """An HTTP error answer; ``http_status`` and the server's own ``detail`` are kept."""

    def __init__(self, message: str, *, status_code: int, detail: str = "") -> None:
        super().__init__(message)
        self.http_status = status_code
        self.detail = detail


class AuthenticationError(CometAPIHTTPError):
    """HTTP 401/403: the API key is missing, wrong or lacks access."""


class InsufficientCreditError(CometAPIHTTPError):
    """HTTP 402: the account behind the key has no credit left."""


class NotFoundError(CometAPIHTTPError):
    """HTTP 404: the model or the prediction does not exist (for this key)."""


class ModelNotFoundError(NotFoundError):
    """HTTP 404 on a create: the model id is unknown to the gateway."""


class PredictionNotFoundError(NotFoundError):
    """HTTP 404 on a query: no prediction with this id (for this key)."""


class RateLimitedError(CometAPIHTTPError):
    """HTTP 429: throttled. ``retry_after`` holds the server's advice in seconds, if any."""

    transient = True
    nothing_created = True

    def __init__(self, message: str, *, status_code: int, detail: str = "", retry_after: float | None) -> None:
        super().__init__(message, status_code=status_code, detail=detail)
        self.retry_after = retry_after


class ServerError(CometAPIHTTPError):
    """HTTP 5xx or 524: the gateway or the model host failed; usually transient."""

    transient = True


class GatewayResponseError(ServerError):
    """An answer that is not the API's JSON (an HTML error page, truncated or malformed JSON)."""


class IncompleteDownloadError(GatewayResponseError):
    """Fewer bytes arrived than the file host announced; the download is retried."""


class ResponseTooLargeError(GatewayResponseError):
    """An answer larger than the provider reads; the same request would get the same answer."""

    transient = False

    def __init__(self, message: str, *, status_code: int, limit: int) -> None:
        super().__init__(message, status_code=status_code)
        self.limit = limit


class UnexpectedPredictionError(GatewayResponseError):
    """An answered prediction whose id is not an id, or not the one asked for: it is never used."""

    transient = False


# --- Outcomes of a prediction -------------------------------------------------------------


class PredictionFailedError(CometAPIError):
    """The prediction ended ``failed``, ``canceled`` or ``aborted``; the message has its error."""

    def __init__(self, message: str, *, prediction_id: str, status: str) -> None:
        super().__init__(message)
        self.prediction_id = prediction_id
        self.status = status


class PredictionTimeoutError(CometAPIError):
    """The prediction did not finish before the task's deadline."""

    def __init__(self, message: str, *, prediction_id: str) -> None:
        super().__init__(message)
        self.prediction_id = prediction_id


class PredictionWaitError(CometAPIError):
    """Waiting broke: polling the prediction kept failing; the prediction may still be running."""

    def __init__(self, message: str, *, prediction_id: str) -> None:
        super().__init__(message)
        self.prediction_id = prediction_id


class UnexpectedEventError(CometAPIError):
    """A trigger event that this provider did not make (a bug, or a trigger of another version)."""


# --- Storing outputs ----------------------------------------------------------------------


class OutputExpiredError(CometAPIError):
    """The prediction's output files were removed (about an hour after it finished)."""


class PredictionNotStorableError(CometAPIError):
    """The prediction has not succeeded, or succeeded without outputs: there is nothing to store."""


class UnsupportedOutputURLError(CometAPIError):
    """
    An output URL whose scheme is not ``http``, ``https`` or ``data``, or a redirect to one (or
    from ``https`` to plain ``http``); never fetched.
    """

    def __init__(self, message: str, *, scheme: str) -> None:
        super().__init__(message)
        self.scheme = scheme


class TooManyRedirectsError(CometAPIError):
    """
    A request redirected more often than any gateway or file host needs: a loop, which the same
    request would only meet again, so it is not retried.

    :ivar url: the URL asked for, without its query or user info.
    """

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class MalformedOutputError(CometAPIError):
    """A ``data:`` output that cannot be decoded."""


class OutputTooLargeError(CometAPIError):
    """
    An output over the connection's ``max_output_bytes``; nothing is left at its final path.

    :ivar url: the output (without its query); :ivar size: its size as announced or as read so
        far; :ivar limit: the bound.
    """

    def __init__(self, message: str, *, url: str, size: int | None, limit: int) -> None:
        super().__init__(message)
        self.url = url
        self.size = size
        self.limit = limit


class UnsafeOutputPathError(CometAPIError):
    """A file name that would place an output outside the destination; nothing is written."""


class DestinationNotWritableError(CometAPIError):
    """The storage destination cannot be created or written to; found before any download."""


# --- Batches ------------------------------------------------------------------------------


class BatchInputError(InvalidInputError):
    """
    One input of a batch is not a valid input, found before anything is created.

    :ivar index: the input's position in the batch (0-based); :ivar line: its line number in
        the JSON Lines file (1-based), or ``None`` for a list.
    """

    def __init__(
        self,
        message: str,
        *,
        index: int | None,
        line: int | None = None,
        invalid_fields: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        super().__init__(message, invalid_fields=invalid_fields)
        self.index = index
        self.line = line


class BatchManifestError(CometAPIError):
    """A batch manifest that cannot be read back (not JSON Lines, a line missing or twice, a bad field)."""


class BatchManifestMismatchError(BatchManifestError):
    """A manifest written for other inputs or another model than the batch now has."""


class BatchFailedError(CometAPIError):
    """More inputs of a batch ended unsuccessfully than ``max_failed`` allows; the manifest lists them."""

    def __init__(self, message: str, *, manifest: str, counts: Mapping[str, int]) -> None:
        super().__init__(message)
        self.manifest = manifest
        self.counts = dict(counts)


class BatchTimeoutError(BatchFailedError):
    """The batch did not finish before its ``timeout``; its unfinished predictions were cancelled."""


class BatchWaitError(CometAPIError):
    """Waiting for a batch broke (polling kept failing); its predictions may still run, and a retry resumes them."""


# --- Cost and budgets ---------------------------------------------------------------------


class InvalidPricesError(CometAPIConfigurationError):
    """The connection's ``prices`` or ``currency`` extra cannot be used: not JSON, a bad model id, a bad price."""


class MissingPriceError(CometAPIConfigurationError):
    """``max_cost`` is set, but the connection has no price for the task's model; found before any request."""


class BudgetExceededError(CometAPIError, AirflowFailException):
    """
    What the task would make passes its ``max_images`` or ``max_cost``; nothing was created.

    An ``AirflowFailException``: a retry would be refused the same way, so none is made.

    :ivar images: the images the refused create could make; :ivar spent: what earlier tries
        (and this one) had spent, a ``cost.Spend``.
    """

    def __init__(self, message: str, *, images: int, spent: Any) -> None:
        super().__init__(message)
        self.images = images
        self.spent = spent
