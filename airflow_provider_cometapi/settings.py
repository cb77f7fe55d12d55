"""
The connection's settings: read from an Airflow connection once per hook, checked, and bounded.

Every value a request depends on (base URL, key, timeouts, retries, the output size limit), and
the prices that cost and budgets are counted in (``airflow_provider_cometapi.cost``), is
validated here, so a bad connection fails with a message naming the field before any request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from airflow_provider_cometapi import __version__
from airflow_provider_cometapi.cost import Prices
from airflow_provider_cometapi.exceptions import CometAPIConfigurationError

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Connection

    from airflow_provider_cometapi.api import ApiRequest

DEFAULT_BASE_URL = "https://api.cometapi.com"
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 10.0
# A whole output download, from connecting to the last byte: a host that drips is cut off here.
DEFAULT_DOWNLOAD_TIMEOUT = 300.0
# The largest output file stored; FLUX images are a few MiB, so this only stops runaway bodies.
DEFAULT_MAX_OUTPUT_BYTES = 100 * 1024 * 1024


def connection_named(conn_id: str) -> str:
    """
    How a message names the connection: ``connection '<id>'``, or ``the connection`` for an
    empty id. The Test button tests a copy under a temporary id that would only confuse.
    """
    return f"connection {conn_id!r}" if conn_id else "the connection"


@dataclass(frozen=True)
class CometAPISettings:
    """What the hook reads from the Airflow connection, once per hook."""

    conn_id: str
    base_url: str
    api_key: str = ""
    read_timeout: float = DEFAULT_READ_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT
    max_retries: int | None = None
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    prediction_url_template: str | None = None
    # The extras `prices` and `currency`: what each output image of a model costs.
    prices: Prices = field(default_factory=Prices)

    def __repr__(self) -> str:
        # Never the key, even in a debugger or a traceback's locals.
        return f"CometAPISettings(conn_id={self.conn_id!r}, base_url={self.base_url!r})"

    @classmethod
    def from_connection(
        cls, conn: Connection, extra: Mapping[str, Any], *, conn_id: str | None = None
    ) -> CometAPISettings:
        """:param conn_id: the id messages name, instead of the connection's own; ``""`` for "the connection"."""
        conn_id = conn.conn_id if conn_id is None else conn_id
        if not isinstance(extra, Mapping):
            raise CometAPIConfigurationError(
                f'The extra of {connection_named(conn_id)} must be a JSON object, such as {{"timeout": 60}}.'
            )
        return cls(
            conn_id=conn_id,
            base_url=_checked_base_url(conn.host, conn.port, conn_id),
            api_key=_checked_api_key(conn.password, conn_id),
            read_timeout=_positive_number(extra.get("timeout"), DEFAULT_READ_TIMEOUT, "timeout", conn_id),
            connect_timeout=_positive_number(
                extra.get("connect_timeout"), DEFAULT_CONNECT_TIMEOUT, "connect_timeout", conn_id
            ),
            download_timeout=_positive_number(
                extra.get("download_timeout"), DEFAULT_DOWNLOAD_TIMEOUT, "download_timeout", conn_id
            ),
            max_retries=_retries(extra.get("max_retries"), conn_id),
            max_output_bytes=int(
                _positive_number(
                    extra.get("max_output_bytes"), DEFAULT_MAX_OUTPUT_BYTES, "max_output_bytes", conn_id, unit="bytes"
                )
            ),
            prediction_url_template=_template(extra.get("prediction_url_template"), conn_id),
            prices=Prices.from_extra(extra.get("prices"), extra.get("currency"), conn_id=conn_id),
        )

    def read_timeout_for(self, request: ApiRequest) -> float:
        """The read timeout, lengthened by how long the request asks the gateway to hold it."""
        return self.read_timeout + request.read_timeout_extra

    def attempt_timeout_for(self, request: ApiRequest) -> float:
        """The most one attempt may take, connecting and reading the whole answer included."""
        return self.connect_timeout + self.read_timeout_for(request)

    def client_timeout(self, request: ApiRequest, seconds: float) -> aiohttp.ClientTimeout:
        """
        An async attempt's timeout: ``seconds`` in all, and the read timeout for each read.

        The usual one (a plain call, far from any deadline) is built once: it is on every poll.
        """
        read = self.read_timeout_for(request)
        if seconds == self.attempt_timeout_for(request) and not request.read_timeout_extra:
            return self._plain_client_timeout
        return aiohttp.ClientTimeout(total=seconds, sock_connect=self.connect_timeout, sock_read=min(seconds, read))

    @cached_property
    def _plain_client_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=self.connect_timeout + self.read_timeout,
            sock_connect=self.connect_timeout,
            sock_read=self.read_timeout,
        )

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @cached_property
    def headers(self) -> dict[str, str]:
        """Every API call's headers; built once (a dict the callers only read)."""
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
    try:
        base_url = base_url_of(host, port)
        parts = urlsplit(base_url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # an unparsable port or IPv6 literal
        valid = False
    if not valid or not _printable(base_url):
        raise CometAPIConfigurationError(
            f"The Base URL (host) {host!r} of {connection_named(conn_id)} is not an http(s) URL. Leave it empty for "
            f"{DEFAULT_BASE_URL}, or give a URL such as http://127.0.0.1:8765 for a local emulator."
        )
    return base_url


def _checked_api_key(password: str | None, conn_id: str) -> str:
    api_key = (password or "").strip()
    if not api_key:
        raise CometAPIConfigurationError(
            f"{_capitalized(connection_named(conn_id))} has no API key. Put your CometAPI key in its "
            "'API key' (password) field."
        )
    # Such a key cannot go into an HTTP header; sent anyway it would be echoed, escaped and so
    # unmasked, in the transport's error. The message never shows the key itself.
    if not _printable(api_key):
        raise CometAPIConfigurationError(
            f"The API key of {connection_named(conn_id)} contains a control character or a character outside "
            "Latin-1 (a stray line break or a copy-paste artefact?). Paste the key again, exactly as the "
            "CometAPI console shows it."
        )
    return api_key


def _printable(text: str) -> bool:
    return all(" " <= char <= "\xff" and char != "\x7f" for char in text)


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _is_loopback(hostname: str | None) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname or "").is_loopback
    except ValueError:
        return False


def _positive_number(value: Any, default: float, name: str, conn_id: str, *, unit: str = "seconds") -> float:
    try:
        number = _number(value, float, lambda n: 0 < n < float("inf"))
    except ValueError:
        raise CometAPIConfigurationError(
            f"The extra field {name!r} of {connection_named(conn_id)} must be a positive number of {unit}, "
            f"got {value!r}."
        ) from None
    return default if number is None else number


def _retries(value: Any, conn_id: str) -> int | None:
    try:
        return _number(value, int, lambda n: 0 <= n <= 10)
    except ValueError:
        raise CometAPIConfigurationError(
            f"The extra field 'max_retries' of {connection_named(conn_id)} must be a whole number from 0 to 10, "
            f"got {value!r}."
        ) from None


N = TypeVar("N", int, float)


def _number(value: Any, convert: Callable[[Any], N], accepted: Callable[[N], bool]) -> N | None:
    """An extra's number, ``None`` when unset; ``ValueError`` when it is not one, or not ``accepted``."""
    if value in (None, ""):
        return None
    try:
        number = convert(value)
    except (TypeError, OverflowError) as error:
        raise ValueError(value) from error
    if isinstance(value, bool) or not accepted(number):
        raise ValueError(value)
    return number


def _template(value: Any, conn_id: str) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or "{prediction_id}" not in value:
        raise CometAPIConfigurationError(
            f"The extra field 'prediction_url_template' of {connection_named(conn_id)} must be a URL with "
            f"{{prediction_id}} in it, for example https://replicate.com/p/{{prediction_id}}; got {value!r}."
        )
    return value


def _airflow_version() -> str:
    try:
        from airflow import __version__ as airflow_version

        return str(airflow_version)
    except ImportError:  # pragma: no cover - Airflow is a dependency
        return "unknown"


USER_AGENT = f"airflow-provider-cometapi/{__version__} apache-airflow/{_airflow_version()}"
