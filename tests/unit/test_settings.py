"""settings.py: what a connection may hold, checked before any request, and never shown back."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from airflow_provider_cometapi.api import create_prediction_request, get_prediction_request
from airflow_provider_cometapi.exceptions import CometAPIConfigurationError
from airflow_provider_cometapi.settings import (
    DEFAULT_DOWNLOAD_TIMEOUT,
    DEFAULT_MAX_OUTPUT_BYTES,
    CometAPISettings,
)


@dataclass
class Conn:
    """The fields of an Airflow connection that the settings read."""

    password: str | None = "sk-good-key"
    host: str | None = "http://127.0.0.1:8765"
    port: int | None = None
    conn_id: str = "cometapi_default"


def settings(extra: object = None, **conn: object) -> CometAPISettings:
    return CometAPISettings.from_connection(Conn(**conn), {} if extra is None else extra)  # type: ignore[arg-type]


def test_defaults():
    read = settings()
    assert (read.download_timeout, read.max_output_bytes) == (DEFAULT_DOWNLOAD_TIMEOUT, DEFAULT_MAX_OUTPUT_BYTES)


def test_an_attempt_may_take_connect_plus_read_plus_the_wait_it_asks_for():
    read = settings({"timeout": 30, "connect_timeout": 5})
    plain = get_prediction_request("abc")
    waiting = create_prediction_request("black-forest-labs/flux-schnell", {"prompt": "x"}, wait=20)
    assert (read.attempt_timeout_for(plain), read.attempt_timeout_for(waiting)) == (35.0, 55.0)


@pytest.mark.parametrize(
    "key",
    ["sk-abc\r\nX-Injected: 1", "sk-abc\ndef", "sk-\x00abc", "sk-ключ-123", "sk-abc\x7fdef", "sk-€uro"],
)
def test_a_key_that_cannot_go_into_a_header_is_refused_without_showing_it(key):
    with pytest.raises(CometAPIConfigurationError, match="Paste the key again") as info:
        settings(password=key)
    assert key.strip() not in str(info.value)
    assert "abc" not in str(info.value) and "ключ" not in str(info.value)


def test_a_latin_1_key_with_surrounding_spaces_is_accepted():
    assert settings(password="  sk-abc-é  ").api_key == "sk-abc-é"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"timeout": "nan"}, "timeout"),
        ({"timeout": "inf"}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"connect_timeout": -1}, "connect_timeout"),
        ({"download_timeout": 0}, "download_timeout"),
        ({"max_output_bytes": "lots"}, "max_output_bytes"),
        ({"max_output_bytes": 0}, "max_output_bytes"),
        ({"max_retries": 10**400}, "max_retries"),
        ({"max_retries": False}, "max_retries"),
        ({"prediction_url_template": "https://replicate.com/p/"}, "prediction_url_template"),
        ({"prediction_url_template": 42}, "prediction_url_template"),
    ],
)
def test_bad_extras_name_the_field(extra, field):
    with pytest.raises(CometAPIConfigurationError, match=field):
        settings(extra)


def test_extras_are_read():
    read = settings(
        {"download_timeout": "30", "max_output_bytes": 1024, "prediction_url_template": "x/{prediction_id}"}
    )
    assert (read.download_timeout, read.max_output_bytes, read.prediction_url_template) == (
        30.0,
        1024,
        "x/{prediction_id}",
    )


@pytest.mark.parametrize("host", ["http://h:0", "http://[::1", "http://h:99999", "http://h/\npath", "ftp://h"])
def test_bad_base_urls_are_configuration_errors(host):
    with pytest.raises(CometAPIConfigurationError, match="Base URL"):
        settings(host=host)


def test_an_extra_that_is_not_an_object_is_a_configuration_error():
    with pytest.raises(CometAPIConfigurationError, match="JSON object"):
        settings(["timeout", 3])


def test_the_key_never_shows_in_repr():
    assert "sk-good-key" not in repr(settings())


def test_prices_and_currency_are_read_with_the_connection():
    read = settings({"prices": '{"black-forest-labs/flux-schnell": 0.003}', "currency": "EUR"})
    assert read.prices.cost("black-forest-labs/flux-schnell", 2) == 0.006
    assert read.prices.currency == "EUR"
    assert not settings().prices
    assert settings().prices.currency == "USD"


def test_bad_prices_fail_with_the_connection_named_before_any_request():
    from airflow_provider_cometapi.exceptions import InvalidPricesError

    with pytest.raises(InvalidPricesError, match="'prices' of connection 'cometapi_default'.*finite number >= 0"):
        settings({"prices": {"black-forest-labs/flux-schnell": -1}})
    assert issubclass(InvalidPricesError, CometAPIConfigurationError)
