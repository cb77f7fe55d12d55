"""
Total deadlines and bounded reads for both transports.

``requests`` only knows per-read timeouts, which restart on every byte: a server that drips
one byte a second holds a call forever. Blocking calls therefore run under ``Deadline``: a
timer that shuts the call's sockets down when it passes, which ends any read blocked on them.
The sockets are registered by the connection class of the session ``blocking_session`` makes.
Async calls get the same bound from aiohttp's total timeout. Bodies are read in chunks, never
past a limit, on both paths.

Both paths follow at most ``MAX_REDIRECTS`` redirects and refuse one from ``https`` to plain
``http`` as the libraries refuse one to ``file://``: the blocking path before following it, the
async path (aiohttp follows it, without the key) before reading its answer.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_CHUNK = 64 * 1024
_current = threading.local()
# Redirects one request follows; the gateway and file hosts need one or two, more is a loop.
MAX_REDIRECTS = 10
# aiohttp's limit counts the redirect it refuses to follow, requests' does not: both follow MAX_REDIRECTS.
ASYNC_MAX_REDIRECTS = MAX_REDIRECTS + 1


def downgrades(origin: str, location: str) -> bool:
    """Whether a redirect from ``origin`` to ``location`` (the header as sent) leaves https for plain http."""
    # Parsed as requests parses it (urlsplit drops tabs and newlines, strips leading control
    # characters): only an http: location changes the scheme; a relative or "//host" one keeps it.
    return urlsplit(origin).scheme.lower() == "https" and urlsplit(location).scheme.lower() == "http"


def downgrade_refused(location: str) -> str:
    """The library error's words for a refused downgrade: the target first, quoted (``requests_failure`` reads it)."""
    return f"{location!r} is plain http, redirected to from https"


class Deadline:
    """The deadline of one blocking call; ``expired`` tells, afterwards, whether it cut the call."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, seconds), self._expire)
        self._timer.daemon = True

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def __enter__(self) -> Deadline:
        self._previous = getattr(_current, "deadline", None)
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        _current.deadline = self._previous
        self._sockets.clear()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed: nothing is blocked on it
        sock.shutdown(socket.SHUT_RDWR)


class _WatchedMixin:
    sock: socket.socket | None

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        # Waiting for the status line and headers is where a dripping server holds a call.
        deadline: Deadline | None = getattr(_current, "deadline", None)
        if deadline is not None:
            deadline.watch(self.sock)
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_WatchedMixin, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedMixin, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


# Connections kept per host: a batch's create, store and cancel threads share one session, and
# a pool smaller than its threads would close a connection (and warn) after every request.
_POOL_CONNECTIONS = 32
# Origins whose environment settings a session remembers (the gateway, and a few file hosts).
_MAX_REMEMBERED_ORIGINS = 64


class _Session(requests.Session):
    """
    A session that reads the proxy and CA-bundle environment once per origin, not per request.

    ``requests`` scans every environment variable (twice) for each request to find proxies; in
    a worker, with Airflow's many variables, that was a large part of a create's CPU. The
    settings are the ones ``requests`` itself derives, remembered for the session's life (a task).
    """

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple[Any, ...], Any] = {}
        self.max_redirects = MAX_REDIRECTS

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        # requests asks this before it follows each redirect: a downgrade is refused there.
        location = super().get_redirect_target(resp)
        if location is not None and downgrades(str(resp.url), location):
            resp.close()
            raise requests.exceptions.InvalidSchema(downgrade_refused(location))
        return location

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        try:
            parts = urlsplit(str(url))
            key = (parts.scheme, parts.netloc, frozenset((proxies or {}).items()), stream, verify, cert)
            hash(key)
        except (TypeError, ValueError):  # unhashable settings: as requests does it
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        settings = self._environment.get(key)
        if settings is None:
            if len(self._environment) >= _MAX_REMEMBERED_ORIGINS:
                self._environment.clear()
            settings = super().merge_environment_settings(url, dict(proxies or {}), stream, verify, cert)
            self._environment[key] = settings
        return {**settings, "proxies": dict(settings["proxies"])}


def blocking_session(user_agent: str) -> requests.Session:
    """A ``requests`` session whose calls ``Deadline`` can cut short."""
    session = _Session()
    session.headers["User-Agent"] = user_agent
    adapter = _WatchedAdapter(pool_maxsize=_POOL_CONNECTIONS)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def read_blocking(response: requests.Response, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of a streamed body, and whether there was more (not read)."""
    body = bytearray()
    for chunk in response.iter_content(_CHUNK):
        body += chunk
        if len(body) > limit:
            return bytes(body[:limit]), True
    return bytes(body), False


def refuse_async_downgrade(response: aiohttp.ClientResponse) -> None:
    """
    Raise if aiohttp followed a redirect from https to plain http on its way to ``response``.

    aiohttp has no hook before it follows a redirect but its tracing, which costs every request
    (a trigger's poll about 15 %), so a downgrade is caught here, before the answer is read: the
    plain-http request went out without the key (aiohttp drops ``Authorization`` for another
    origin), and its answer is not used. Call it only when ``response.history`` is not empty.
    """
    if (target := downgraded_target((*response.history, response))) is not None:
        raise aiohttp.InvalidUrlRedirectClientError(target, downgrade_refused(target))


def downgraded_target(hops: Sequence[aiohttp.ClientResponse]) -> str | None:
    """The first plain-http URL that the answers ``hops`` (in order) reached from an https one, if any."""
    for earlier, later in itertools.pairwise(hops):
        if earlier.url.scheme == "https" and later.url.scheme == "http":
            return str(later.url)
    return None


async def read_async(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """``read_blocking`` for an aiohttp response."""
    if (
        response.content_length is not None
        and response.content_length <= limit
        and not response.headers.get("Content-Encoding")
    ):
        return await response.read(), False  # the common case: one read, sized by the header
    body = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > limit:
            return bytes(body[:limit]), True
    return bytes(body), False
