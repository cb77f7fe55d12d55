"""The hook: every HTTP call of the provider, blocking (requests) and async (aiohttp)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import requests
from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook

from airflow_provider_cometapi import __version__
from airflow_provider_cometapi.api import (
    DEFAULT_BASE_URL,
    ApiRequest,
    Operation,
    api_url,
    cancel_prediction_request,
    connection_named,
    create_prediction_request,
    download_request,
    error_for_status,
    get_prediction_request,
    list_models_request,
    read_response,
    same_origin,
)
from airflow_provider_cometapi.exceptions import (
    CometAPIConfigurationError,
    CometAPIConnectionError,
    CometAPIError,
    CometAPITimeoutError,
    NotFoundError,
)
from airflow_provider_cometapi.models import ModelId, Prediction, validate_input
from airflow_provider_cometapi.retry import RetryPolicy
from airflow_provider_cometapi.storage import CHUNK_SIZE, decode_data_uri, extension_for, write_atomically

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Connection, ObjectStoragePath

DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class CometAPISettings:
    """What the hook reads from the Airflow connection, once per hook."""

    conn_id: str
    base_url: str
    api_key: str = ""
    read_timeout: float = DEFAULT_READ_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    max_retries: int | None = None
    prediction_url_template: str | None = None

    def __repr__(self) -> str:
        # Never the key, even in a debugger or a traceback's locals.
        return f"CometAPISettings(conn_id={self.conn_id!r}, base_url={self.base_url!r})"

    @classmethod
    def from_connection(
        cls, conn: Connection, extra: Mapping[str, Any], *, conn_id: str | None = None
    ) -> CometAPISettings:
        """:param conn_id: the id messages name, instead of the connection's own; ``""`` for "the connection"."""
        conn_id = conn.conn_id if conn_id is None else conn_id
        api_key = (conn.password or "").strip()
        if not api_key:
            raise CometAPIConfigurationError(
                f"{_capitalized(connection_named(conn_id))} has no API key. Put your CometAPI key in its "
                "'API key' (password) field."
            )
        return cls(
            conn_id=conn_id,
            base_url=_checked_base_url(conn.host, conn.port, conn_id),
            api_key=api_key,
            read_timeout=_positive_float(extra.get("timeout"), DEFAULT_READ_TIMEOUT, "timeout", conn_id),
            connect_timeout=_positive_float(
                extra.get("connect_timeout"), DEFAULT_CONNECT_TIMEOUT, "connect_timeout", conn_id
            ),
            max_retries=_retries(extra.get("max_retries"), conn_id),
            prediction_url_template=extra.get("prediction_url_template") or None,
        )

    def read_timeout_for(self, request: ApiRequest) -> float:
        """The read timeout, lengthened by how long the request asks the gateway to hold it."""
        return self.read_timeout + request.read_timeout_extra

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @property
    def headers(self) -> dict[str, str]:
        return {**self.auth_headers, "Accept": "application/json", "User-Agent": USER_AGENT}


def base_url_of(host: str | None, port: int | None = None) -> str:
    """
    The API's base URL from the connection's host (and port).

    An empty host means the public gateway. A bare host name means HTTPS, except a loopback
    host, which means HTTP (the local emulator). A host may also be a whole URL with a path.
    """
    host = (host or "").strip().rstrip("/")
    if not host:
        return DEFAULT_BASE_URL
    if "://" not in host:
        scheme = "http" if _is_loopback(urlsplit(f"//{host}").hostname) else "https"
        host = f"{scheme}://{host}"
    parts = urlsplit(host)
    if port and parts.port is None:
        host = urlunsplit(parts._replace(netloc=f"{parts.netloc}:{port}"))
    return host


def _checked_base_url(host: str | None, port: int | None, conn_id: str) -> str:
    base_url = base_url_of(host, port)
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CometAPIConfigurationError(
            f"The Base URL (host) {host!r} of {connection_named(conn_id)} is not an http(s) URL. Leave it empty for "
            f"{DEFAULT_BASE_URL}, or give a URL such as http://127.0.0.1:8765 for a local emulator."
        )
    return base_url


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _is_loopback(hostname: str | None) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname or "").is_loopback
    except ValueError:
        return False


def _positive_float(value: Any, default: float, name: str, conn_id: str) -> float:
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if number <= 0:
        raise CometAPIConfigurationError(
            f"The extra field {name!r} of {connection_named(conn_id)} must be a positive number of seconds, "
            f"got {value!r}."
        )
    return number


def _retries(value: Any, conn_id: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        retries = int(value)
    except (TypeError, ValueError):
        retries = -1
    if not 0 <= retries <= 10:
        raise CometAPIConfigurationError(
            f"The extra field 'max_retries' of {connection_named(conn_id)} must be a whole number from 0 to 10, "
            f"got {value!r}."
        )
    return retries


def _airflow_version() -> str:
    try:
        from airflow import __version__ as airflow_version

        return str(airflow_version)
    except ImportError:  # pragma: no cover - Airflow is a dependency
        return "unknown"


USER_AGENT = f"airflow-provider-cometapi/{__version__} apache-airflow/{_airflow_version()}"


class CometAPIHook(BaseHook):
    """
    Talks to CometAPI's Replicate-compatible prediction API.

    Blocking methods use one ``requests`` session per hook; ``a*`` methods use one ``aiohttp``
    session per hook and event loop, closed by ``aclose()`` (or ``async with hook``). The
    connection is read once per hook. Every call follows the shared ``RetryPolicy`` and raises
    the provider's errors (``airflow_provider_cometapi.exceptions``).

    :param cometapi_conn_id: the Airflow connection (type ``cometapi``): the API key as its
        password, the base URL as its host (empty for ``https://api.cometapi.com``).
    :param retry_policy: overrides the default policy (and the connection's ``max_retries``).
    """

    conn_name_attr = "cometapi_conn_id"
    default_conn_name = "cometapi_default"
    conn_type = "cometapi"
    hook_name = "CometAPI"

    def __init__(
        self,
        cometapi_conn_id: str = default_conn_name,
        *,
        retry_policy: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cometapi_conn_id = cometapi_conn_id
        self._retry_policy = retry_policy
        self._settings: CometAPISettings | None = None
        self._session: requests.Session | None = None
        self._async_session: aiohttp.ClientSession | None = None

    # --- Connection ---------------------------------------------------------------------

    @property
    def settings(self) -> CometAPISettings:
        """The connection's settings, looked up on first use (blocking)."""
        if self._settings is None:
            self._settings = self._read_settings()
        return self._settings

    def _read_settings(self, *, conn_id: str | None = None) -> CometAPISettings:
        """Look the connection up now (blocking); ``conn_id`` as in ``CometAPISettings.from_connection``."""
        try:
            conn = self.get_connection(self.cometapi_conn_id)
        except AirflowNotFoundException as exc:
            raise self._missing_connection() from exc
        return self._register(CometAPISettings.from_connection(conn, conn.extra_dejson, conn_id=conn_id))

    async def aget_settings(self) -> CometAPISettings:
        """The connection's settings, looked up on first use without blocking the event loop."""
        if self._settings is None:
            from airflow.providers.common.compat.connection import (
                get_async_connection,
                get_async_extra_dejson,
            )

            try:
                conn = await get_async_connection(self.cometapi_conn_id, hook=self)
            except AirflowNotFoundException as exc:
                raise self._missing_connection() from exc
            extra = await get_async_extra_dejson(conn)
            # Airflow masks a connection's password when it is fetched; nothing blocking here.
            self._settings = CometAPISettings.from_connection(conn, extra)
        return self._settings

    def _register(self, settings: CometAPISettings) -> CometAPISettings:
        from airflow.providers.common.compat.sdk import mask_secret

        mask_secret(settings.api_key)
        return settings

    def _missing_connection(self) -> CometAPIConfigurationError:
        env = f"AIRFLOW_CONN_{self.cometapi_conn_id.upper()}"
        return CometAPIConfigurationError(
            f"The Airflow connection {self.cometapi_conn_id!r} does not exist. Create it (Admin > "
            f'Connections, type \'CometAPI\') or set {env}=\'{{"conn_type": "cometapi", '
            f'"password": "<your key>"}}\'.'
        )

    @property
    def retry_policy(self) -> RetryPolicy:
        if self._retry_policy is not None:
            return self._retry_policy
        retries = self._settings.max_retries if self._settings else None
        return RetryPolicy() if retries is None else RetryPolicy(max_attempts=max(1, retries + 1))

    # --- Blocking calls ------------------------------------------------------------------

    def get_conn(self) -> requests.Session:
        """
        The hook's ``requests`` session, with the User-Agent set.

        The key is added per request, to API calls and to files on the gateway itself only, so
        that a download from a file host never carries it.
        """
        if self._session is None:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            self._session = session
        return self._session

    def _call(
        self, request: ApiRequest, retry_policy: RetryPolicy | None = None, settings: CometAPISettings | None = None
    ) -> Any:
        settings = settings or self.settings
        session = self.get_conn()
        url = api_url(settings.base_url, request.path)
        timeout = (settings.connect_timeout, settings.read_timeout_for(request))
        for attempt in (retry_policy or self.retry_policy).retrying(request, self.log):
            with attempt:
                try:
                    response = session.request(
                        request.method,
                        url,
                        json=request.json,
                        headers={**settings.headers, **request.headers},
                        timeout=timeout,
                    )
                except requests.RequestException as exc:
                    raise _requests_error(exc, request, settings) from None
                return read_response(
                    request,
                    response.status_code,
                    response.headers,
                    response.content,
                    conn_id=settings.conn_id,
                )
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def create_prediction(self, model: str, input: Mapping[str, Any], *, wait: int | None = None) -> Prediction:
        """
        Start a prediction.

        The input is checked locally first (FLUX fields). A create is repeated only when the
        server surely did not see it (HTTP 429, connection refused): never a second, paid
        prediction.

        :param model: ``owner/name`` or ``owner/name:version``.
        :param input: the model's input, e.g. ``{"prompt": "..."}``; unknown keys pass through.
        :param wait: 1-60: the gateway may hold the call that long and answer the finished
            prediction (``Prefer: wait``); an unfinished one is answered as it is.
        :return: the prediction as created (usually ``starting``).
        :raises InvalidModelIdError: a malformed model id, before any request.
        :raises InvalidInputError: a bad FLUX field (locally) or HTTP 422.
        """
        model_id = ModelId.parse(model)
        request = create_prediction_request(model_id, validate_input(model_id, input), wait=wait)
        return Prediction.from_api(self._call(request))

    def get_prediction(self, prediction_id: str) -> Prediction:
        """
        The prediction's current state, with fresh output URLs.

        :param prediction_id: the id from ``create_prediction`` (XCom ``prediction_id``).
        :raises PredictionNotFoundError: an unknown id, or one created with another key.
        """
        return Prediction.from_api(self._call(get_prediction_request(prediction_id)))

    def cancel_prediction(self, prediction_id: str) -> Prediction | None:
        """
        Ask the gateway to cancel a prediction.

        :param prediction_id: the prediction to cancel.
        :return: the prediction as the gateway answered, or ``None`` where cancelling is not
            supported (HTTP 404/405): then it runs to its end.
        """
        request = cancel_prediction_request(prediction_id)
        try:
            return Prediction.from_api(self._call(request))
        except CometAPIError as exc:
            self._raise_unless_cancel_unsupported(request, exc)
            return None

    def download_output(self, url: str, directory: ObjectStoragePath, stem: str) -> ObjectStoragePath:
        """
        Store one output as ``directory/stem.<ext>``.

        Streams to a temporary object and moves it into place once complete and of the announced
        size; an interrupted download leaves nothing behind and is retried like any GET. The API
        key is sent only when the file is on the gateway itself.

        :param url: an ``http(s)://`` URL or a ``data:`` URI from ``Prediction.output``.
        :param directory: the folder, any Airflow object storage path.
        :param stem: the file name without extension; the extension comes from the content type,
            else the URL.
        :return: the stored file.
        :raises OutputExpiredError: the file host answered 401/403/404/410 (expired outputs).
        """
        if url.startswith("data:"):
            mime, payload = decode_data_uri(url)
            target = directory / f"{stem}.{extension_for(mime, url)}"
            write_atomically(target, [payload], expected_size=len(payload))
            return target
        settings = self.settings
        request = download_request(url)
        headers = settings.auth_headers if same_origin(url, settings.base_url) else {}
        timeout = (settings.connect_timeout, settings.read_timeout)
        for attempt in self.retry_policy.retrying(request, self.log):
            with attempt:
                try:
                    with self.get_conn().get(url, headers=headers, stream=True, timeout=timeout) as response:
                        if response.status_code != 200:
                            raise error_for_status(
                                request,
                                response.status_code,
                                response.headers,
                                None,
                                response.content[:2048],
                                conn_id=settings.conn_id,
                            )
                        target = directory / f"{stem}.{extension_for(response.headers.get('Content-Type'), url)}"
                        length = response.headers.get("Content-Length")
                        check_size = length is not None and "Content-Encoding" not in response.headers
                        write_atomically(
                            target,
                            response.iter_content(CHUNK_SIZE),
                            expected_size=int(length) if check_size and length else None,
                        )
                        return target
                except requests.RequestException as exc:
                    raise _requests_error(exc, request, settings) from None
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def list_models(self) -> list[str]:
        """Ids of the models the key can use (``GET /v1/models``)."""
        return _model_ids(self._call(list_models_request()))

    def test_connection(self) -> tuple[bool, str]:
        """
        The Airflow UI's Test button: one authenticated call, with a message that says what to fix.

        The messages say "the connection", not its id: Airflow tests a copy of the connection
        under a temporary id that means nothing to the user.
        """
        try:
            settings = self._read_settings(conn_id="")
            models = _model_ids(self._call(list_models_request(), _TEST_CONNECTION_POLICY, settings))
        except CometAPIError as exc:
            return False, str(exc)
        return True, f"Connected to {settings.base_url}: the API key works ({len(models)} models available)."

    # --- Async calls ---------------------------------------------------------------------

    def _async_session_for(self, settings: CometAPISettings) -> aiohttp.ClientSession:
        """The hook's aiohttp session on the running loop, made on first use."""
        session = self._async_session
        loop = asyncio.get_running_loop()
        if session is None or session.closed or getattr(session, "_loop", loop) is not loop:
            session = aiohttp.ClientSession(
                headers=settings.headers,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
                ),
            )
            self._async_session = session
        return session

    async def _acall(self, request: ApiRequest) -> Any:
        settings = await self.aget_settings()
        session = self._async_session_for(settings)
        url = api_url(settings.base_url, request.path)
        timeout = session.timeout
        if request.read_timeout_extra:
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout_for(request)
            )
        async for attempt in self.retry_policy.async_retrying(request, self.log):
            with attempt:
                try:
                    async with session.request(
                        request.method, url, json=request.json, headers=request.headers, timeout=timeout
                    ) as response:
                        body = await response.read()
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    raise _aiohttp_error(exc, request, settings) from None
                return read_response(request, response.status, response.headers, body, conn_id=settings.conn_id)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def acreate_prediction(self, model: str, input: Mapping[str, Any], *, wait: int | None = None) -> Prediction:
        """Async ``create_prediction``: same parameters, result and errors."""
        model_id = ModelId.parse(model)
        request = create_prediction_request(model_id, validate_input(model_id, input), wait=wait)
        return Prediction.from_api(await self._acall(request))

    async def aget_prediction(self, prediction_id: str) -> Prediction:
        """Async ``get_prediction``: same parameters, result and errors."""
        return Prediction.from_api(await self._acall(get_prediction_request(prediction_id)))

    async def acancel_prediction(self, prediction_id: str) -> Prediction | None:
        """Async ``cancel_prediction``: same parameters, result and errors."""
        request = cancel_prediction_request(prediction_id)
        try:
            return Prediction.from_api(await self._acall(request))
        except CometAPIError as exc:
            self._raise_unless_cancel_unsupported(request, exc)
            return None

    async def aclose(self) -> None:
        """Close the async session (the blocking one is closed by ``close()``)."""
        session, self._async_session = self._async_session, None
        if session is not None and not session.closed:
            await session.close()

    async def __aenter__(self) -> CometAPIHook:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def close(self) -> None:
        """Close the blocking ``requests`` session."""
        session, self._session = self._session, None
        if session is not None:
            session.close()

    # --- Shared helpers -----------------------------------------------------------------

    def _raise_unless_cancel_unsupported(self, request: ApiRequest, error: CometAPIError) -> None:
        status = getattr(error, "http_status", None)
        if not (isinstance(error, NotFoundError) or status == 405):
            raise error
        self.log.info(
            "CometAPI does not support cancelling prediction %s (HTTP %s); it will run to its end.",
            request.subject,
            status,
        )


_TEST_CONNECTION_POLICY = RetryPolicy(max_attempts=2, max_elapsed=10.0)


def _model_ids(payload: Any) -> list[str]:
    data = payload.get("data") if isinstance(payload, Mapping) else payload
    if not isinstance(data, list):
        return []
    return [str(item.get("id")) for item in data if isinstance(item, Mapping) and item.get("id")]


def _connection_failure(
    request: ApiRequest, settings: CometAPISettings, reason: object, *, request_sent: bool
) -> CometAPIConnectionError:
    hint = (
        f"Check the 'Base URL' of {connection_named(settings.conn_id)} and that the host is reachable."
        if not request_sent
        else "The connection broke before a complete answer."
    )
    if request.operation is Operation.CREATE and request_sent:
        hint += " The prediction may have been created: it is not created again automatically."
    return CometAPIConnectionError(
        f"Could not reach CometAPI at {settings.base_url} ({request.describe()}): {reason}. {hint}",
        request_sent=request_sent,
    )


def _timeout_failure(request: ApiRequest, settings: CometAPISettings) -> CometAPITimeoutError:
    message = (
        f"CometAPI at {settings.base_url} did not answer {request.describe()} within "
        f"{settings.read_timeout_for(request):g}s. Raise the connection's 'timeout' extra "
        "if the gateway is slow."
    )
    if request.operation is Operation.CREATE:
        message += " The prediction may have been created: it is not created again automatically."
    return CometAPITimeoutError(message)


def _requests_error(exc: requests.RequestException, request: ApiRequest, settings: CometAPISettings) -> CometAPIError:
    if isinstance(exc, requests.ConnectTimeout):
        return _connection_failure(request, settings, "connect timeout", request_sent=False)
    if isinstance(exc, requests.Timeout):
        return _timeout_failure(request, settings)
    refused = _connect_failure_in(exc) if isinstance(exc, requests.ConnectionError) else None
    if refused is not None:
        return _connection_failure(request, settings, refused, request_sent=False)
    return _connection_failure(request, settings, f"{type(exc).__name__}: {exc}", request_sent=True)


def _aiohttp_error(exc: BaseException, request: ApiRequest, settings: CometAPISettings) -> CometAPIError:
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return _connection_failure(request, settings, exc, request_sent=False)
    if isinstance(exc, asyncio.TimeoutError):
        return _timeout_failure(request, settings)
    return _connection_failure(request, settings, f"{type(exc).__name__}: {exc}".rstrip(": "), request_sent=True)


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
