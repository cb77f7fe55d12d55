"""The hook: every HTTP call of the provider, blocking (requests) and async (aiohttp)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import aiohttp
import requests
from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook
from yarl import URL

from airflow_provider_cometapi import metrics
from airflow_provider_cometapi.api import (
    ApiRequest,
    api_url,
    cancel_prediction_request,
    create_prediction_request,
    download_request,
    get_prediction_request,
    list_models_request,
    redact_url,
    same_origin,
)
from airflow_provider_cometapi.exceptions import CometAPIConfigurationError, CometAPIError, NotFoundError
from airflow_provider_cometapi.models import ModelId, Prediction, validate_input
from airflow_provider_cometapi.responses import (
    CHUNK_SIZE,
    MAX_ERROR_BODY_BYTES,
    OutputStream,
    aiohttp_failure,
    announced_length,
    body_limit,
    bounded_chunks,
    data_output,
    error_for_status,
    media_type_of,
    output_scheme,
    past_deadline,
    read_response,
    requests_failure,
    timeout_failure,
    too_large,
)
from airflow_provider_cometapi.retry import LoggerLike, RetryPolicy
from airflow_provider_cometapi.sessions import LoopSession, SharedLookups
from airflow_provider_cometapi.settings import USER_AGENT, CometAPISettings, base_url_of
from airflow_provider_cometapi.transport import (
    ASYNC_MAX_REDIRECTS,
    Deadline,
    blocking_session,
    read_async,
    read_blocking,
    refuse_async_downgrade,
)

__all__ = ["USER_AGENT", "CometAPIHook", "CometAPISettings", "base_url_of"]

T = TypeVar("T")

# Shared by every hook in the process, per event loop (airflow_provider_cometapi.sessions).
_LOOP_SESSION = LoopSession()
_SETTINGS_LOOKUPS: SharedLookups[CometAPISettings] = SharedLookups()
_TEST_CONNECTION_POLICY = RetryPolicy(max_attempts=2, max_elapsed=10.0)


class CometAPIHook(BaseHook):
    """
    Talks to CometAPI's Replicate-compatible prediction API.

    Blocking methods use one ``requests`` session per hook. ``a*`` methods use one ``aiohttp``
    session per event loop, shared by every hook on it; a hook holds it until ``aclose()`` (or
    ``async with hook``), and the last one to let go closes it. The connection is read once per
    hook. Every call follows the shared ``RetryPolicy``, has a total deadline per attempt
    (connect and read timeouts added up, the whole answer included), reads at most
    ``MAX_RESPONSE_BYTES`` of an answer, and raises the provider's errors
    (``airflow_provider_cometapi.exceptions``). Calls that take ``deadline`` (an absolute Unix
    time) neither start an attempt nor sleep for a retry past it.

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

    @property
    def looked_up_settings(self) -> CometAPISettings | None:
        """The settings if this hook has read them already, else ``None`` (never a lookup: code that must not block)."""
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
        that ask in the next few seconds (``airflow_provider_cometapi.sessions``).
        """
        if self._settings is None:
            self._settings = await _SETTINGS_LOOKUPS.get((type(self), self.cometapi_conn_id), self._lookup_settings)
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
        """The policy given, else the default one with the connection's ``max_retries`` (once it is read)."""
        if self._retry_policy is not None:
            return self._retry_policy
        if self._settings is None:
            return RetryPolicy()
        retries = self._settings.max_retries
        # Kept once the connection is known: a poll asks for it every time.
        self._retry_policy = RetryPolicy() if retries is None else RetryPolicy(max_attempts=max(1, retries + 1))
        return self._retry_policy

    # --- Blocking calls ------------------------------------------------------------------

    def get_conn(self) -> requests.Session:
        """
        The hook's ``requests`` session, with the User-Agent set and every call's deadline enforced.

        The key is added per request, to API calls and to files on the gateway itself only, so
        that a download from a file host never carries it.
        """
        if self._session is None:
            self._session = blocking_session(USER_AGENT)
        return self._session

    def _call(
        self,
        request: ApiRequest,
        *,
        retry_policy: RetryPolicy | None = None,
        settings: CometAPISettings | None = None,
        deadline: float | None = None,
    ) -> Any:
        settings = settings or self.settings
        session = self.get_conn()
        url = api_url(settings.base_url, request.path)
        headers = {**settings.headers, **request.headers}

        def attempt() -> Any:
            seconds = _attempt_seconds(settings.attempt_timeout_for(request), deadline, request)
            timeout = _timeouts(settings, seconds, settings.read_timeout_for(request))
            with Deadline(seconds) as watch:
                try:
                    with session.request(
                        request.method, url, json=request.json, headers=headers, timeout=timeout, stream=True
                    ) as response:
                        limit = body_limit(response.status_code)
                        body, more = read_blocking(response, limit)
                except requests.RequestException as exc:
                    raise requests_failure(
                        exc, request, settings, timed_out_after=_cut_after(exc, watch, timeout, settings)
                    ) from None
            if watch.expired:  # cut short: what arrived may look whole (an empty 200) but is not
                raise timeout_failure(request, settings, seconds)
            if more and limit > MAX_ERROR_BODY_BYTES:
                raise too_large(request, response.status_code, limit)
            return read_response(
                request,
                response.status_code,
                response.headers,
                body,
                conn_id=settings.conn_id,
                secret=settings.api_key,
            )

        return (retry_policy or self.retry_policy).call(request, self._logger, attempt, deadline=deadline)

    def create_prediction(
        self, model: str, input: Mapping[str, Any], *, wait: int | None = None, cancel_after: int | None = None
    ) -> Prediction:
        """
        Start a prediction.

        The input is checked locally first (FLUX fields, JSON values). A create is repeated only
        when the server surely did not see it (HTTP 429, connection refused): never a second,
        paid prediction.

        :param model: ``owner/name`` or ``owner/name:version``.
        :param input: the model's input, e.g. ``{"prompt": "..."}``; unknown keys pass through.
        :param wait: 1-60: the gateway may hold the call that long and answer the finished
            prediction (``Prefer: wait``); an unfinished one is answered as it is.
        :return: the prediction as created (usually ``starting``).
        :raises InvalidModelIdError: a malformed model id, before any request.
        :raises InvalidInputError: a bad FLUX field or a value JSON cannot carry (locally), or HTTP 422.
        """
        model_id = ModelId.parse(model)
        request = create_prediction_request(
            model_id, validate_input(model_id, input), wait=wait, cancel_after=cancel_after
        )
        return metrics.created(model_id, Prediction.from_api(self._call(request)))

    def get_prediction(self, prediction_id: str, *, deadline: float | None = None) -> Prediction:
        """
        The prediction's current state, with fresh output URLs.

        :param prediction_id: the id from ``create_prediction`` (XCom ``prediction_id``).
        :param deadline: absolute Unix time that no attempt or retry outlives.
        :raises PredictionNotFoundError: an unknown id, or one created with another key.
        :raises UnexpectedPredictionError: the gateway answered about another prediction.
        """
        request = get_prediction_request(prediction_id)
        return Prediction.from_api(self._call(request, deadline=deadline), expected_id=request.subject)

    def cancel_prediction(self, prediction_id: str, *, deadline: float | None = None) -> Prediction | None:
        """
        Ask the gateway to cancel a prediction.

        :param prediction_id: the prediction to cancel.
        :param deadline: absolute Unix time that no attempt or retry outlives.
        :return: the prediction as the gateway answered, or ``None`` where cancelling is not
            supported (HTTP 404/405): then it runs to its end.
        """
        request = cancel_prediction_request(prediction_id)
        try:
            return Prediction.from_api(self._call(request, deadline=deadline), expected_id=request.subject)
        except CometAPIError as exc:
            self._raise_unless_cancel_unsupported(request, exc)
            return None

    def stream_output(self, url: str, consume: Callable[[OutputStream], T], *, deadline: float | None = None) -> T:
        """
        Read one output file and hand it to ``consume``, which stores it.

        An ``http(s)`` URL is streamed (the key is sent only when the file is on the gateway
        itself); a ``data:`` URI is decoded. The whole of one try, ``consume`` included, follows
        the retry policy, so an interrupted download is tried again from the start; each try
        has the connection's ``download_timeout`` in all. The stream stops past the connection's
        ``max_output_bytes``.

        :param url: an output URL or ``data:`` URI from ``Prediction.output``.
        :param consume: called with the ``OutputStream``; its result is returned.
        :param deadline: absolute Unix time that no try or retry outlives.
        :raises UnsupportedOutputURLError: a scheme other than http, https or data, at once.
        :raises OutputTooLargeError: the file is over ``max_output_bytes``.
        :raises OutputExpiredError: the file host answered 401/403/404/410 (expired outputs).
        """
        settings = self.settings
        if output_scheme(url) == "data":
            return consume(data_output(url, limit=settings.max_output_bytes))
        request = download_request(url)
        headers = settings.auth_headers if same_origin(url, settings.base_url) else {}
        session = self.get_conn()

        def attempt() -> T:
            seconds = _attempt_seconds(settings.download_timeout, deadline, request)
            timeout = _timeouts(settings, seconds, settings.read_timeout)
            with Deadline(seconds) as watch:
                try:
                    with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
                        if response.status_code != 200:
                            body, _ = read_blocking(response, MAX_ERROR_BODY_BYTES)
                            raise error_for_status(
                                request,
                                response.status_code,
                                response.headers,
                                None,
                                body,
                                conn_id=settings.conn_id,
                                secret=settings.api_key,
                            )
                        length = announced_length(response.headers)
                        chunks = _until_cut(response.iter_content(CHUNK_SIZE), watch, request, settings)
                        return consume(
                            OutputStream(
                                url=request.subject,
                                media_type=media_type_of(response.headers.get("Content-Type")),
                                length=length,
                                chunks=bounded_chunks(
                                    chunks, url=request.subject, announced=length, limit=settings.max_output_bytes
                                ),
                            )
                        )
                except requests.RequestException as exc:
                    raise requests_failure(
                        exc, request, settings, timed_out_after=_cut_after(exc, watch, timeout, settings)
                    ) from None

        return self.retry_policy.call(request, self._logger, attempt, deadline=deadline)

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
            models = _model_ids(
                self._call(list_models_request(), retry_policy=_TEST_CONNECTION_POLICY, settings=settings)
            )
        except CometAPIError as exc:
            return False, str(exc)
        where = redact_url(settings.base_url)  # a Base URL may carry user info
        return True, f"Connected to {where}: the API key works ({len(models)} models available)."

    # --- Async calls ---------------------------------------------------------------------

    def _logger(self) -> LoggerLike:
        # Made on first use only: most hooks in a triggerer never log (no retries).
        return self.log

    async def _async_session_for(self) -> aiohttp.ClientSession:
        """The running loop's shared aiohttp session; this hook holds it until ``aclose()``."""
        session = self._async_session
        if session is not None and not session.closed and self._async_loop is asyncio.get_running_loop():
            return session
        self._async_loop, self._async_session = await _LOOP_SESSION.acquire(self._async_loop)
        return self._async_session

    async def _acall(self, request: ApiRequest, url: URL | None = None, *, deadline: float | None = None) -> Any:
        # The settings and the session are awaited only the first time: a poll has both already.
        settings = self._settings or await self.aget_settings()
        session = self._async_session
        if session is None or session.closed or self._async_loop is not asyncio.get_running_loop():
            session = await self._async_session_for()
        if url is None:
            url = URL(api_url(settings.base_url, request.path))
        headers = {**settings.headers, **request.headers} if request.headers else settings.headers

        async def attempt() -> Any:
            seconds = _attempt_seconds(settings.attempt_timeout_for(request), deadline, request)
            timeout = settings.client_timeout(request, seconds)
            try:
                async with session.request(
                    request.method,
                    url,
                    json=request.json,
                    headers=headers,
                    timeout=timeout,
                    max_redirects=ASYNC_MAX_REDIRECTS,
                ) as response:
                    if response.history:  # redirected: never from https to plain http
                        refuse_async_downgrade(response)
                    limit = body_limit(response.status)
                    body, more = await read_async(response, limit)
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise aiohttp_failure(exc, request, settings, total=seconds) from None
            if more and limit > MAX_ERROR_BODY_BYTES:
                raise too_large(request, response.status, limit)
            return read_response(
                request, response.status, response.headers, body, conn_id=settings.conn_id, secret=settings.api_key
            )

        return await self.retry_policy.acall(request, self._logger, attempt, deadline=deadline)

    async def acreate_prediction(
        self, model: str, input: Mapping[str, Any], *, wait: int | None = None, cancel_after: int | None = None
    ) -> Prediction:
        """Async ``create_prediction``: same parameters, result and errors."""
        model_id = ModelId.parse(model)
        request = create_prediction_request(
            model_id, validate_input(model_id, input), wait=wait, cancel_after=cancel_after
        )
        return metrics.created(model_id, Prediction.from_api(await self._acall(request)))

    async def aget_prediction(self, prediction_id: str, *, deadline: float | None = None) -> Prediction:
        """Async ``get_prediction``: same parameters, result and errors."""
        last = self._last_get
        if last is None or last[0] != prediction_id:
            settings = await self.aget_settings()
            request = get_prediction_request(prediction_id)
            last = self._last_get = (prediction_id, request, URL(api_url(settings.base_url, request.path)))
        return Prediction.from_api(await self._acall(last[1], last[2], deadline=deadline), expected_id=last[1].subject)

    async def acancel_prediction(self, prediction_id: str, *, deadline: float | None = None) -> Prediction | None:
        """Async ``cancel_prediction``: same parameters, result and errors."""
        request = cancel_prediction_request(prediction_id)
        try:
            return Prediction.from_api(await self._acall(request, deadline=deadline), expected_id=request.subject)
        except CometAPIError as exc:
            self._raise_unless_cancel_unsupported(request, exc)
            return None

    async def aclose(self) -> None:
        """
        Let go of the event loop's shared session; the last hook to let go closes it.

        The blocking session is closed by ``close()``.
        """
        loop, self._async_loop, self._async_session = self._async_loop, None, None
        await _LOOP_SESSION.release(loop)

    async def __aenter__(self) -> CometAPIHook:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def close(self) -> None:
        """Close the blocking ``requests`` session, and let go of an async one left held."""
        session, self._session = self._session, None
        if session is not None:
            session.close()
        loop, self._async_loop, self._async_session = self._async_loop, None, None
        _LOOP_SESSION.release_elsewhere(loop)

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


def _until_cut(
    chunks: Iterator[bytes], watch: Deadline, request: ApiRequest, settings: CometAPISettings
) -> Iterator[bytes]:
    """``chunks``, failing instead of ending when the deadline cut the download (it only looks complete)."""
    for chunk in chunks:
        if watch.expired:
            break
        yield chunk
    if watch.expired:
        raise timeout_failure(request, settings, watch.seconds)


def _timeouts(settings: CometAPISettings, seconds: float, read: float) -> tuple[float, float]:
    """
    ``requests``' (connect, read) timeouts for a blocking attempt of ``seconds`` in all.

    ``Deadline`` watches a socket only once it is connected: a connect that hangs (a full
    accept queue) is held to the attempt's time by its own timeout, cut to it.
    """
    return min(settings.connect_timeout, seconds), min(seconds, read)


def _cut_after(
    exc: BaseException, watch: Deadline, timeout: tuple[float, float], settings: CometAPISettings
) -> float | None:
    """The attempt's seconds if its deadline cut the call (the watchdog, or a connect timeout cut to it)."""
    connect_cut = timeout[0] < settings.connect_timeout and isinstance(exc, requests.ConnectTimeout)
    return watch.seconds if watch.expired or connect_cut else None


def _attempt_seconds(limit: float, deadline: float | None, request: ApiRequest) -> float:
    """An attempt's total time: its own limit, cut to what is left before the wait's deadline."""
    if deadline is None:
        return limit
    remaining = deadline - time.time()
    if remaining <= 0:
        raise past_deadline(request)
    return min(limit, remaining)


def _model_ids(payload: Any) -> list[str]:
    data = payload.get("data") if isinstance(payload, Mapping) else payload
    if not isinstance(data, list):
        return []
    return [str(item.get("id"))[:200] for item in data if isinstance(item, Mapping) and item.get("id")]
