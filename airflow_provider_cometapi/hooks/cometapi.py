"""The hook: every HTTP call of the provider, blocking (requests) and async (aiohttp)."""

from __future__ import annotations

import asyncio
import ipaddress
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import requests
from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook
from yarl import URL

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
from airflow_provider_cometapi.retry import LoggerLike, RetryPolicy
from airflow_provider_cometapi.storage import CHUNK_SIZE, decode_data_uri, extension_for, write_atomically

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Connection, ObjectStoragePath

DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 10.0
# A connection looked up by a hook on an event loop is reused by the hooks on that loop that ask
# within this many seconds: triggers deferred in a burst then cost one lookup, and a changed
# connection is read a few seconds later.
LOOKUP_REUSE_SECONDS = 5.0
# Connections one event loop keeps to the gateway, shared by every hook on it: thousands of
# triggers in a triggerer then poll over a hundred keep-alive connections, not one each.
MAX_CONNECTIONS_PER_LOOP = 100


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

    @cached_property
    def headers(self) -> dict[str, str]:
        """Every API call's headers; built once (a dict the callers only read)."""
        return {**self.auth_headers, "Accept": "application/json", "User-Agent": USER_AGENT}

    def client_timeout_for(self, request: ApiRequest) -> aiohttp.ClientTimeout:
        """``read_timeout_for`` as an async call's timeout; the common one is built once."""
        if request.read_timeout_extra:
            return self._client_timeout(self.read_timeout_for(request))
        return self._plain_client_timeout

    @cached_property
    def _plain_client_timeout(self) -> aiohttp.ClientTimeout:
        return self._client_timeout(self.read_timeout)

    def _client_timeout(self, read_timeout: float) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout, sock_read=read_timeout)


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

    Blocking methods use one ``requests`` session per hook. ``a*`` methods use one ``aiohttp``
    session per event loop, shared by every hook on it (at most ``MAX_CONNECTIONS_PER_LOOP``
    connections); a hook holds it until ``aclose()`` (or ``async with hook``), and the last
    one to let go closes it. The connection is read once per hook. Every call follows the
    shared ``RetryPolicy`` and raises the provider's errors (``airflow_provider_cometapi.exceptions``).

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
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._async_session: aiohttp.ClientSession | None = None
        # The last prediction polled, its request and URL: a poll loop builds them once.
        self._last_get: tuple[str, ApiRequest, URL] | None = None

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
        """
        The connection's settings, looked up on first use without blocking the event loop.

        Hooks on one event loop that need the same connection at the same time share one lookup
        (in a triggerer each is a round trip to its supervisor), and its answer serves the hooks
        that ask in the next ``LOOKUP_REUSE_SECONDS``; after that a changed connection is read.
        """
        if self._settings is None:
            self._settings = await _shared_lookup(self)
        return self._settings

    async def _lookup_settings(self) -> CometAPISettings:
        from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson

        try:
            conn = await get_async_connection(self.cometapi_conn_id, hook=self)
        except AirflowNotFoundException as exc:
            raise self._missing_connection() from exc
        extra = await get_async_extra_dejson(conn)
        # Airflow masks a connection's password when it is fetched; nothing blocking here.
        return CometAPISettings.from_connection(conn, extra)

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
        headers = {**settings.headers, **request.headers}

        def attempt() -> Any:
            try:
                response = session.request(request.method, url, json=request.json, headers=headers, timeout=timeout)
            except requests.RequestException as exc:
                raise _requests_error(exc, request, settings) from None
            return read_response(
                request, response.status_code, response.headers, response.content, conn_id=settings.conn_id
            )

        return (retry_policy or self.retry_policy).call(request, self._logger, attempt)

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

    def _logger(self) -> LoggerLike:
        # Made on first use only: most hooks in a triggerer never log (no retries).
        return self.log

    def _async_session_for(self) -> aiohttp.ClientSession:
        """The running loop's shared aiohttp session; this hook holds it until ``aclose()``."""
        loop = asyncio.get_running_loop()
        session = self._async_session
        if self._async_loop is loop and session is not None and not session.closed:
            return session
        if self._async_loop is not loop:
            if self._async_loop is not None:
                # Used on another loop before (asyncio.run twice): that loop's session cannot be
                # awaited from here; if this hook was its last user, detach it (marks it closed).
                stale = _drop_user(self._async_loop)
                if stale is not None:
                    stale.detach()
            self._async_loop = loop
            _SESSION_USERS[loop] = _SESSION_USERS.get(loop, 0) + 1
        self._async_session = session = _session_of(loop)
        return session

    async def _acall(self, request: ApiRequest, url: URL | None = None) -> Any:
        settings = await self.aget_settings()
        session = self._async_session_for()
        if url is None:
            url = URL(api_url(settings.base_url, request.path))
        headers = {**settings.headers, **request.headers} if request.headers else settings.headers
        timeout = settings.client_timeout_for(request)

        async def attempt() -> Any:
            try:
                async with session.request(
                    request.method, url, json=request.json, headers=headers, timeout=timeout
                ) as response:
                    body = await response.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise _aiohttp_error(exc, request, settings) from None
            return read_response(request, response.status, response.headers, body, conn_id=settings.conn_id)

        return await self.retry_policy.acall(request, self._logger, attempt)

    async def acreate_prediction(self, model: str, input: Mapping[str, Any], *, wait: int | None = None) -> Prediction:
        """Async ``create_prediction``: same parameters, result and errors."""
        model_id = ModelId.parse(model)
        request = create_prediction_request(model_id, validate_input(model_id, input), wait=wait)
        return Prediction.from_api(await self._acall(request))

    async def aget_prediction(self, prediction_id: str) -> Prediction:
        """Async ``get_prediction``: same parameters, result and errors."""
        last = self._last_get
        if last is None or last[0] != prediction_id:
            settings = await self.aget_settings()
            request = get_prediction_request(prediction_id)
            last = self._last_get = (prediction_id, request, URL(api_url(settings.base_url, request.path)))
        return Prediction.from_api(await self._acall(last[1], last[2]))

    async def acancel_prediction(self, prediction_id: str) -> Prediction | None:
        """Async ``cancel_prediction``: same parameters, result and errors."""
        request = cancel_prediction_request(prediction_id)
        try:
            return Prediction.from_api(await self._acall(request))
        except CometAPIError as exc:
            self._raise_unless_cancel_unsupported(request, exc)
            return None

    async def aclose(self) -> None:
        """
        Let go of the event loop's shared session; the last hook to let go closes it.

        The blocking session is closed by ``close()``.
        """
        loop, self._async_loop, self._async_session = self._async_loop, None, None
        session = _drop_user(loop) if loop is not None else None
        if session is not None:
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


# --- What hooks on one event loop share ----------------------------------------------------

# One session per loop, with how many hooks hold it; weak keys, so a loop that is gone is forgotten.
_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = weakref.WeakKeyDictionary()
_SESSION_USERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()
# Connection lookups in flight per loop, by hook class and conn id.
_LOOKUPS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[type, str], asyncio.Future[CometAPISettings]]
] = weakref.WeakKeyDictionary()


def _session_of(loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession:
    session = _SESSIONS.get(loop)
    if session is None or session.closed:
        # No default headers: the key goes with each request, so one session serves every
        # connection (and key) used on the loop.
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS_PER_LOOP))
        _SESSIONS[loop] = session
    return session


def _drop_user(loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession | None:
    """One hook fewer holds the loop's session; returns it, to be closed, when none does any more."""
    users = _SESSION_USERS.get(loop, 0) - 1
    if users > 0:
        _SESSION_USERS[loop] = users
        return None
    _SESSION_USERS.pop(loop, None)
    session = _SESSIONS.pop(loop, None)
    return session if session is not None and not session.closed else None


async def _shared_lookup(hook: CometAPIHook) -> CometAPISettings:
    """
    ``hook._lookup_settings()``, shared by the hooks of the running loop: a lookup in flight is
    awaited once by all that ask for it, and its answer serves those that ask in the next
    ``LOOKUP_REUSE_SECONDS``. A failed lookup is not reused.
    """
    loop = asyncio.get_running_loop()
    lookups = _LOOKUPS.setdefault(loop, {})
    key = (type(hook), hook.cometapi_conn_id)
    shared = lookups.get(key)
    if shared is None:
        shared = asyncio.ensure_future(hook._lookup_settings())
        lookups[key] = shared

        def forget() -> None:
            if lookups.get(key) is shared:
                del lookups[key]

        def answered(done: asyncio.Future[CometAPISettings]) -> None:
            if done.cancelled() or done.exception() is not None:  # seen, so never "not retrieved"
                forget()
            else:
                loop.call_later(LOOKUP_REUSE_SECONDS, forget)

        shared.add_done_callback(answered)
    if shared.done():
        return shared.result()
    # Shielded: one hook being cancelled must not cancel the lookup the others wait for.
    return await asyncio.shield(shared)


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
