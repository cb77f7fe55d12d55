"""
Turning what the network answered, or failed to answer, into JSON, output bytes or errors.

The one place that decides what an answer means, for both transports of the hook: HTTP error
answers in either envelope, bodies that are not JSON, transport failures (refused, reset,
timed out), output files and ``data:`` URIs. Everything here treats the gateway as untrusted:
bodies are read only up to a bound, messages never carry a URL's query or the API key, and a
number the server sends (``Retry-After``) is clamped before use.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from airflow_provider_cometapi.api import ApiRequest, Operation, api_url, redact_url, redact_urls
from airflow_provider_cometapi.exceptions import (
    AuthenticationError,
    CometAPIConnectionError,
    CometAPIError,
    CometAPIHTTPError,
    CometAPITimeoutError,
    GatewayResponseError,
    IncompleteDownloadError,
    InsufficientCreditError,
    InvalidInputError,
    MalformedOutputError,
    ModelNotFoundError,
    NotFoundError,
    OutputExpiredError,
    OutputTooLargeError,
    PredictionNotFoundError,
    RateLimitedError,
    ResponseTooLargeError,
    ServerError,
    TooManyRedirectsError,
    UnsupportedOutputURLError,
)
from airflow_provider_cometapi.settings import connection_named

if TYPE_CHECKING:
    from airflow_provider_cometapi.settings import CometAPISettings

# The largest API answer read: a prediction with inline (data:) outputs of a few MiB fits; a
# body past it is a broken or hostile gateway, and reading on would cost every DAG in a triggerer.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# Of an error answer only the start is read: its message is at the top, and a 400 MB 404 page
# must not be held in memory.
MAX_ERROR_BODY_BYTES = 4 * 1024
CHUNK_SIZE = 256 * 1024
# Longer advice than this is treated as "not soon" (the policy then stops); keeps the arithmetic finite.
_MAX_RETRY_AFTER = 24 * 3600.0
_DETAIL_CHARS = 300
OUTPUT_SCHEMES = ("http", "https", "data")


# --- Reading answers ----------------------------------------------------------------------


def read_response(
    request: ApiRequest, status: int, headers: Mapping[str, str], body: bytes, *, conn_id: str, secret: str = ""
) -> Any:
    """
    Return the answer's JSON, or raise the error the answer means.

    Every string of the JSON has ``secret`` (the API key) replaced by ``***``: a gateway that
    echoes the key in a prediction's ``error``, ``logs`` or ``input`` cannot put it into an
    event, a log or an exception, nor into XCom.
    """
    if not 200 <= status < 300:
        payload, _ = _parse_json(body, secret)
        raise error_for_status(request, status, headers, payload, body, conn_id=conn_id, secret=secret)
    payload, parse_error = _parse_json(body, secret)
    if parse_error is None:
        return payload
    advice = (
        "The prediction may have been created: check before running the task again."
        if request.operation is Operation.CREATE
        else "This is a gateway fault; retry later."
    )
    raise GatewayResponseError(
        f"CometAPI answered {request.describe()} with HTTP {status} but the body is not valid JSON "
        f"({parse_error}; starts with {_snippet(body, secret)!r}). {advice}",
        status_code=status,
    )


def body_limit(status: int) -> int:
    """How much of an answer with this status is read."""
    return MAX_RESPONSE_BYTES if 200 <= status < 300 else MAX_ERROR_BODY_BYTES


def too_large(request: ApiRequest, status: int, limit: int) -> ResponseTooLargeError:
    advice = (
        " The prediction may have been created: check before running the task again."
        if request.operation is Operation.CREATE
        else ""
    )
    return ResponseTooLargeError(
        f"CometAPI answered {request.describe()} with more than {limit // (1024 * 1024)} MiB, more than any "
        f"prediction needs; the answer was not read further. This is a gateway fault.{advice}",
        status_code=status,
        limit=limit,
    )


def error_for_status(
    request: ApiRequest,
    status: int,
    headers: Mapping[str, str],
    payload: Any,
    body: bytes,
    *,
    conn_id: str,
    secret: str = "",
) -> CometAPIError:
    """Map an HTTP error answer, in either error envelope or none, to the provider's error."""
    # The gateway's own words are kept, without the key should it echo it, then shortened.
    detail = scrub(_error_detail(payload) or _snippet(body, secret), secret)[:_DETAIL_CHARS]
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
        fields = _invalid_fields(payload, secret)
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
    """The server's advice, from the ``Retry-After`` header (seconds or date) or a body field, clamped."""
    header = _header(headers, "Retry-After")
    if header:
        seconds = _seconds(header.strip())
        if seconds is None:
            try:
                seconds = (parsedate_to_datetime(header) - datetime.now(UTC)).total_seconds()
            except (TypeError, ValueError, IndexError, OverflowError):
                seconds = None
        if seconds is not None:
            return _clamped(seconds)
    if isinstance(payload, Mapping):
        for container in (payload, payload.get("error")):
            advised = container.get("retry_after") if isinstance(container, Mapping) else None
            if isinstance(advised, int | float) and not isinstance(advised, bool):
                return _clamped(advised)
    return None


def _seconds(text: str) -> float | None:
    if len(text) > 32:  # a number that long is no advice; float() of it would still parse
        return _MAX_RETRY_AFTER
    try:
        return float(text)
    except ValueError:
        return None


def _clamped(seconds: float) -> float:
    try:
        value = float(seconds)
    except OverflowError:  # a 400-digit integer in the body
        return _MAX_RETRY_AFTER
    if math.isnan(value):
        return 0.0
    return min(max(0.0, value), _MAX_RETRY_AFTER)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def _parse_json(body: bytes, secret: str = "") -> tuple[Any, str | None]:
    if not body:
        return None, "empty body"
    try:
        payload = json.loads(body)
        return (scrubbed(payload, secret) if _may_spell(body, secret) else payload), None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
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


def _invalid_fields(payload: Any, secret: str) -> list[dict[str, Any]]:
    fields = payload.get("invalid_fields") if isinstance(payload, Mapping) else None
    if not isinstance(fields, list):
        return []
    return [
        {key: scrub(str(value), secret)[:_DETAIL_CHARS] for key, value in field.items()}
        for field in fields[:20]
        if isinstance(field, Mapping)
    ]


_TAGS = re.compile(r"<[^>]+>")
_SPACES = re.compile(r"\s+")


def _snippet(body: bytes, secret: str = "", limit: int = 160) -> str:
    """The start of ``body`` as text, without tags, the key scrubbed before anything is cut."""
    # A key that starts in the part read is read whole; a key cut by the window's end is dropped.
    window = limit * 4 + len(secret.encode())
    text = scrub(body[:window].decode("utf-8", "replace"), secret)
    if secret and len(body) > window:
        text = text[: -len(secret)]
    text = _SPACES.sub(" ", _TAGS.sub(" ", text)).strip()
    return text[:limit] or "empty body"


# --- What a message may show ------------------------------------------------------------


def scrub(text: str, secret: str) -> str:
    """
    ``text`` with ``secret`` (the API key, should a gateway echo it) replaced by ``***``.

    Scrub first, cut after: a key across the cut would otherwise leave its first characters.
    """
    return text.replace(secret, "***") if secret and secret in text else text


# Keys CometAPI issues are dozens of characters long; the JSON of an answer is scrubbed of
# shorter ones only in messages (an id or a URL holding a short key by chance stays whole).
MIN_SCRUBBED_SECRET_CHARS = 8


def _may_spell(body: bytes, secret: str) -> bool:
    """
    Whether a JSON body can decode to a string holding ``secret``: its bytes are there, or an
    escape could spell them (``\\uXXXX`` any character, ``\\/`` a slash). Otherwise the walk of
    ``scrubbed`` is skipped: a poll's answer is the triggerer's hottest path.
    """
    if len(secret) < MIN_SCRUBBED_SECRET_CHARS:
        return False  # so short it would match inside ids and URLs by chance: scrubbing would corrupt them
    if not secret.isascii() or '"' in secret or "\\" in secret:
        return True
    return secret.encode() in body or b"\\u" in body or b"\\/" in body


def scrubbed(value: Any, secret: str) -> Any:
    """Parsed JSON with ``secret`` scrubbed from every string, keys included; ``value`` itself when it has none."""
    if not secret:
        return value
    if isinstance(value, str):
        return value.replace(secret, "***") if secret in value else value
    if isinstance(value, dict):
        pairs = [(scrubbed(key, secret), scrubbed(item, secret)) for key, item in value.items()]
        changed = any(k is not key or v is not item for (k, v), (key, item) in zip(pairs, value.items(), strict=True))
        return dict(pairs) if changed else value
    if isinstance(value, list):
        items = [scrubbed(item, secret) for item in value]
        return items if any(new is not old for new, old in zip(items, value, strict=True)) else value
    return value


# --- Transport failures -----------------------------------------------------------------


def connection_failure(
    request: ApiRequest, settings: CometAPISettings, reason: object, *, request_sent: bool
) -> CometAPIConnectionError:
    hint = (
        f"Check the 'Base URL' of {connection_named(settings.conn_id)} and that the host is reachable."
        if not request_sent
        else "The connection broke before a complete answer."
    )
    if request.operation is Operation.CREATE and request_sent:
        hint += " The prediction may have been created: it is not created again automatically."
    where = (
        f"the file host of {request.subject}"
        if request.operation is Operation.DOWNLOAD
        else redact_url(settings.base_url)
    )
    # The library's words name the URL it tried (urllib3: "...with url: /files/x.png?X-Amz-Signature=..."):
    # its query and user info are dropped, as the key is.
    why = redact_urls(scrub(str(reason), settings.api_key))
    return CometAPIConnectionError(
        f"Could not reach {'CometAPI at ' if request.operation is not Operation.DOWNLOAD else ''}{where} "
        f"({request.describe()}): {why}. {hint}",
        request_sent=request_sent,
    )


def timeout_failure(request: ApiRequest, settings: CometAPISettings, seconds: float) -> CometAPITimeoutError:
    if request.operation is Operation.DOWNLOAD:
        message = (
            f"Downloading {request.subject} did not finish within {seconds:.3g}s. Raise the connection's "
            "'download_timeout' extra if the file host is slow."
        )
    else:
        message = (
            f"CometAPI at {redact_url(settings.base_url)} did not answer {request.describe()} within {seconds:.3g}s. "
            "Raise the connection's 'timeout' extra if the gateway is slow."
        )
    if request.operation is Operation.CREATE:
        message += " The prediction may have been created: it is not created again automatically."
    return CometAPITimeoutError(message)


def past_deadline(request: ApiRequest) -> CometAPITimeoutError:
    """The wait's own deadline passed before or during ``request``."""
    return CometAPITimeoutError(f"The wait's deadline passed before {request.describe()} was answered.")


def requests_failure(
    exc: BaseException, request: ApiRequest, settings: CometAPISettings, *, timed_out_after: float | None
) -> CometAPIError:
    """
    The error for a failed ``requests`` call.

    :param timed_out_after: the attempt's deadline, in seconds, if it passed (the watchdog
        closed the socket): whatever the library raised then, the cause is the deadline.
    """
    import requests

    if timed_out_after is not None:
        return timeout_failure(request, settings, timed_out_after)
    if isinstance(exc, requests.exceptions.InvalidSchema | requests.exceptions.InvalidURL):
        # A redirect to file://, ftp:// or garbage (the URLs asked for are checked before): requests
        # names the redirect's target only in its message ("No connection adapters were found for '...'").
        quoted = _QUOTED.search(str(exc))
        return redirect_refused(request, quoted["url"] if quoted else "")
    if isinstance(exc, requests.TooManyRedirects):
        last = exc.response.headers.get("Location", "") if exc.response is not None else ""
        return too_many_redirects(request, settings, last)
    if isinstance(exc, requests.ConnectTimeout):
        return connection_failure(request, settings, "connect timeout", request_sent=False)
    if isinstance(exc, requests.Timeout) or _read_timeout_in(exc):
        return timeout_failure(request, settings, settings.read_timeout_for(request))
    refused = _connect_failure_in(exc) if isinstance(exc, requests.ConnectionError) else None
    if refused is not None:
        return connection_failure(request, settings, refused, request_sent=False)
    return connection_failure(request, settings, f"{type(exc).__name__}: {exc}", request_sent=True)


_QUOTED = re.compile(r"""(['"])(?P<url>[^'"]*)\1""")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,19}")


def redirect_refused(request: ApiRequest, target: str) -> UnsupportedOutputURLError:
    """
    ``request`` was redirected to ``target``, which is not an http(s) URL with a host (``file://``,
    ``ftp://``...) or leaves https for plain http: it is not followed, and, the answer being the
    gateway's or file host's choice, not retried either.
    """
    scheme = target.split(":", 1)[0].lower() if ":" in target else ""
    scheme = scheme if _SCHEME.fullmatch(scheme) else ""
    what = f"The output {request.subject}" if request.operation is Operation.DOWNLOAD else request.describe()
    where = f"{redact_url(target)!r} (scheme {scheme or 'none'!r})" if target else "a URL that is not http(s)"
    # An http target is refused only when the request was https (transport.downgrades).
    rule = (
        "the provider does not accept a redirect from https to plain http (the answer would travel "
        "unencrypted; the key is never sent there)"
        if scheme == "http"
        else "the provider follows redirects only to http(s) URLs with a host"
    )
    return UnsupportedOutputURLError(
        f"{what} was redirected to {where}; {rule}, and does not use it. "
        "This is a gateway fault: report it to CometAPI.",
        scheme=scheme,
    )


def too_many_redirects(request: ApiRequest, settings: CometAPISettings, last: str) -> TooManyRedirectsError:
    """
    ``request`` kept being redirected (``transport.MAX_REDIRECTS`` times, ``last`` the next
    target): a loop, which a retry would only run again.
    """
    from airflow_provider_cometapi.transport import MAX_REDIRECTS

    if request.operation is Operation.DOWNLOAD:
        url = request.subject
        fix = "This is a file host fault: report it to CometAPI."
    else:
        url = redact_url(api_url(settings.base_url, request.path))
        fix = (
            f"Check the 'Base URL' of {connection_named(settings.conn_id)}: it must be the gateway's API address "
            "itself (empty for https://api.cometapi.com), not one that redirects; if it is, report it to CometAPI."
        )
        if request.operation is Operation.CREATE:
            fix += " The prediction may have been created: it is not created again automatically."
    then = f" (the last answer pointed to {redact_url(last)!r})" if last else ""
    return TooManyRedirectsError(
        f"{request.method} {url} was redirected more than {MAX_REDIRECTS} times{then}: a redirect loop, which "
        f"trying again would not end, so the request is not retried. {fix}",
        url=url,
    )


def _read_timeout_in(exc: BaseException) -> bool:
    """Whether ``exc`` is a read timeout while the body streamed: ``requests`` raises that as a
    ``ConnectionError`` wrapping urllib3's ``ReadTimeoutError``, not as a ``Timeout``. (The read
    timeout is the attempt's deadline cut short, so it can fire just before the deadline's own
    timer, which a loaded machine runs late.)"""
    import requests
    from urllib3.exceptions import ReadTimeoutError

    return isinstance(exc, requests.ConnectionError) and any(isinstance(arg, ReadTimeoutError) for arg in exc.args)


def aiohttp_failure(
    exc: BaseException, request: ApiRequest, settings: CometAPISettings, *, total: float
) -> CometAPIError:
    """The error for a failed ``aiohttp`` call; ``total`` is the attempt's whole deadline."""
    import aiohttp

    if isinstance(exc, aiohttp.NonHttpUrlRedirectClientError | aiohttp.InvalidUrlRedirectClientError):
        return redirect_refused(request, str(exc.args[0]) if exc.args else "")  # the target, in both
    if isinstance(exc, aiohttp.TooManyRedirects):
        from airflow_provider_cometapi.transport import downgraded_target

        if (target := downgraded_target(exc.history)) is not None:  # the downgrade came first
            return redirect_refused(request, target)
        last = exc.history[-1].headers.get("Location", "") if exc.history else ""
        return too_many_redirects(request, settings, last)
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return connection_failure(request, settings, exc, request_sent=False)
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return timeout_failure(request, settings, min(total, settings.read_timeout_for(request)))
    if isinstance(exc, asyncio.TimeoutError):
        return timeout_failure(request, settings, total)
    return connection_failure(request, settings, f"{type(exc).__name__}: {exc}".rstrip(": "), request_sent=True)


def _connect_failure_in(exc: BaseException) -> BaseException | None:
    """The error that kept the TCP connection from opening, if that is what happened (no request sent)."""
    from urllib3.exceptions import NewConnectionError

    pending: list[object] = [exc]
    for _ in range(12):  # requests -> urllib3 MaxRetryError -> NewConnectionError -> OSError
        if not pending:
            break
        seen = pending.pop()
        if isinstance(seen, NewConnectionError | ConnectionRefusedError):
            return seen
        if isinstance(seen, BaseException):
            pending.extend(
                link
                for link in (seen.__cause__, getattr(seen, "reason", None), *seen.args[:1])
                if isinstance(link, BaseException)
            )
    return None


# --- Output files -------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputStream:
    """
    One output file as it arrives: what its host says it is, and its bytes.

    :ivar url: the output for messages (``redact_url``).
    :ivar media_type: the announced type, lower case without parameters; ``""`` when unknown.
    :ivar length: the announced size in bytes, or ``None``.
    :ivar chunks: the bytes; raises ``OutputTooLargeError`` past the limit and
        ``IncompleteDownloadError`` when the stream ends short of the announced size.
    """

    url: str
    media_type: str
    length: int | None
    chunks: Iterator[bytes]


def output_scheme(url: Any) -> str:
    """The output URL's scheme, or ``UnsupportedOutputURLError`` for one that is never fetched."""
    scheme = url.split(":", 1)[0].lower() if isinstance(url, str) and ":" in url else ""
    if scheme not in OUTPUT_SCHEMES:
        shown = redact_url(url) if isinstance(url, str) else repr(url)
        raise UnsupportedOutputURLError(
            f"The prediction's output {shown!r} is not an http(s) URL or a data: URI (scheme {scheme or 'none'!r}); "
            "the provider does not fetch it. This is a gateway fault: report it to CometAPI.",
            scheme=scheme,
        )
    return scheme


def media_type_of(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()[:100]


def bounded_chunks(chunks: Iterable[bytes], *, url: str, announced: int | None, limit: int) -> Iterator[bytes]:
    """``chunks``, stopped with ``OutputTooLargeError`` past ``limit`` bytes or short of ``announced``."""
    if announced is not None and announced > limit:
        raise _output_too_large(url, announced, limit, announced=True)
    received = 0
    for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise _output_too_large(url, received, limit, announced=False)
        if announced is not None and received > announced:
            raise IncompleteDownloadError(
                f"The file host sent more than the {announced} bytes it announced for {url}.", status_code=200
            )
        yield chunk
    if announced is not None and received != announced:
        raise IncompleteDownloadError(
            f"Downloading {url} gave {received} bytes where the file host announced {announced}; "
            "the download was interrupted.",
            status_code=200,
        )


def announced_length(headers: Mapping[str, str]) -> int | None:
    """``Content-Length`` when it counts the bytes read (no ``Content-Encoding``), else ``None``."""
    length = _header(headers, "Content-Length")
    if length is None or _header(headers, "Content-Encoding") not in (None, "", "identity"):
        return None
    length = length.strip()
    return int(length) if length.isdigit() and len(length) < 19 else None


def data_output(uri: str, *, limit: int) -> OutputStream:
    """A ``data:`` output as a stream of its one decoded chunk."""
    shown = redact_url(uri)
    header, sep, data = uri.partition(",")
    if not header.startswith("data:") or not sep:
        raise MalformedOutputError(f"Malformed data: URI in the prediction output ({shown}).")
    params = header[len("data:") :].split(";")
    # Inline data is decoded whole: its size is bounded by the answer it came in.
    if len(data) * 3 // 4 > limit:
        raise _output_too_large(shown, len(data) * 3 // 4, limit, announced=True)
    try:
        payload = base64.b64decode(data, validate=True) if "base64" in params[1:] else unquote_to_bytes(data)
    except (binascii.Error, ValueError) as error:
        raise MalformedOutputError(f"Undecodable data: URI in the prediction output ({shown}): {error}.") from error
    return OutputStream(
        url=shown,
        media_type=media_type_of(params[0] or "text/plain"),
        length=len(payload),
        chunks=bounded_chunks([payload], url=shown, announced=len(payload), limit=limit),
    )


def _output_too_large(url: str, size: int, limit: int, *, announced: bool) -> OutputTooLargeError:
    how = f"is {size:,} bytes" if announced else f"went past {limit:,} bytes ({size:,} read)"
    return OutputTooLargeError(
        f"The output {url} {how}, more than the {limit:,} bytes the connection allows; nothing was stored. "
        "Raise the connection's 'max_output_bytes' extra if the model really makes files that large.",
        url=url,
        size=size,
        limit=limit,
    )
