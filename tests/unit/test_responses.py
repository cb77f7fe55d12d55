"""responses.py: what each answer and each transport failure means, and the bounds on reading them."""

from __future__ import annotations

import json

import pytest

from airflow_provider_cometapi.api import create_prediction_request, download_request, get_prediction_request
from airflow_provider_cometapi.exceptions import (
    AuthenticationError,
    CometAPIHTTPError,
    GatewayResponseError,
    IncompleteDownloadError,
    InsufficientCreditError,
    InvalidInputError,
    MalformedOutputError,
    ModelNotFoundError,
    OutputExpiredError,
    OutputTooLargeError,
    PredictionNotFoundError,
    RateLimitedError,
    ServerError,
    UnsupportedOutputURLError,
)
from airflow_provider_cometapi.responses import (
    announced_length,
    bounded_chunks,
    data_output,
    output_scheme,
    read_response,
    requests_failure,
    retry_after_seconds,
    scrub,
)
from airflow_provider_cometapi.settings import CometAPISettings

GET = get_prediction_request("abc123")
CREATE = create_prediction_request("black-forest-labs/flux-schnell", {"prompt": "x"}, wait=None)
KEY = "sk-secret-key-123"


def answer(request, status, body, headers=None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return read_response(request, status, headers or {}, raw, conn_id="my_conn", secret=KEY)


def test_success_returns_json():
    assert answer(GET, 200, {"id": "abc123"}) == {"id": "abc123"}


def test_malformed_json_on_success_is_a_transient_gateway_error():
    with pytest.raises(GatewayResponseError, match="not valid JSON") as info:
        answer(GET, 200, b'{"id": "abc", "status": ')
    assert info.value.transient and not info.value.nothing_created


@pytest.mark.parametrize("status", [401, 403])
def test_bad_key_both_envelopes(status):
    with pytest.raises(AuthenticationError, match="my_conn") as info:
        answer(GET, status, {"error": {"message": "Invalid token", "type": "x", "code": "invalid_api_key"}})
    assert "Invalid token" in str(info.value)
    assert not info.value.transient


def test_no_credit():
    with pytest.raises(InsufficientCreditError, match="no credit"):
        answer(CREATE, 402, {"title": "Payment required", "detail": "Insufficient credit", "status": 402})


def test_404_names_the_model_on_create_and_the_prediction_on_get():
    with pytest.raises(ModelNotFoundError, match="black-forest-labs/flux-schnell"):
        answer(CREATE, 404, {"title": "Not found", "detail": "model does not exist", "status": 404})
    with pytest.raises(PredictionNotFoundError, match="abc123"):
        answer(GET, 404, {"title": "Not found", "detail": "no such prediction", "status": 404})


def test_422_lists_every_invalid_field():
    body = {
        "title": "Input validation failed",
        "detail": "- input.aspect_ratio: bad",
        "status": 422,
        "invalid_fields": [
            {"type": "enum", "field": "input.aspect_ratio", "description": "must be one of 1:1, ..."},
            {"type": "required", "field": "input.prompt", "description": "prompt is required"},
        ],
    }
    with pytest.raises(InvalidInputError) as info:
        answer(CREATE, 422, body)
    assert [f["field"] for f in info.value.invalid_fields] == ["input.aspect_ratio", "input.prompt"]
    assert "input.prompt: prompt is required" in str(info.value)
    assert info.value.http_status == 422


def test_429_reads_retry_after_from_header_or_body():
    with pytest.raises(RateLimitedError) as info:
        answer(CREATE, 429, {"title": "Too many requests", "status": 429}, {"Retry-After": "3"})
    assert info.value.retry_after == 3
    assert info.value.nothing_created
    with pytest.raises(RateLimitedError) as info:
        answer(GET, 429, {"title": "Too many", "retry_after": 1.5})
    assert info.value.retry_after == 1.5
    with pytest.raises(RateLimitedError) as info:
        answer(GET, 429, {"error": {"message": "slow down"}})
    assert info.value.retry_after is None


def test_retry_after_as_http_date_and_case_insensitive_header():
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None) == 0.0
    assert retry_after_seconds({"RETRY-AFTER": "2"}, None) == 2.0


@pytest.mark.parametrize("status", [500, 502, 503, 524])
def test_html_error_pages_are_transient_gateway_errors(status):
    page = b"<html><head><title>502</title></head><body><h1>Bad Gateway</h1> cloudflare</body></html>"
    with pytest.raises(GatewayResponseError) as info:
        answer(GET, status, page)
    assert info.value.transient
    assert "Bad Gateway" in str(info.value)
    assert "<h1>" not in str(info.value)


def test_json_5xx_is_a_server_error():
    with pytest.raises(ServerError) as info:
        answer(GET, 503, {"title": "Service unavailable", "status": 503})
    assert not isinstance(info.value, GatewayResponseError)
    assert info.value.http_status == 503


def test_other_4xx_is_a_plain_http_error():
    with pytest.raises(CometAPIHTTPError, match="HTTP 409"):
        answer(GET, 409, {"detail": "conflict"})


def test_signed_file_urls_lose_their_query_in_messages():
    request = download_request("https://files.example/out-0.png?X-Amz-Signature=secret123")
    assert "secret123" not in request.describe()
    with pytest.raises(OutputExpiredError) as info:
        answer(request, 403, b"<html>AccessDenied</html>")
    assert "secret123" not in str(info.value)


def test_an_echoed_key_is_scrubbed_from_every_message():
    with pytest.raises(AuthenticationError) as info:
        answer(GET, 401, {"error": {"message": f"Invalid token: Bearer {KEY}"}})
    assert KEY not in str(info.value) and KEY not in info.value.detail
    assert "Bearer ***" in str(info.value)
    with pytest.raises(InvalidInputError) as info:
        answer(CREATE, 422, {"detail": "bad", "invalid_fields": [{"field": "input.x", "description": KEY}]})
    assert KEY not in str(info.value) and KEY not in json.dumps(info.value.invalid_fields)
    with pytest.raises(GatewayResponseError) as info:
        answer(GET, 200, f"not json {KEY}".encode())
    assert KEY not in str(info.value)
    assert scrub("nothing here", KEY) == "nothing here"
    assert scrub("x", "") == "x"


# Where the key could be cut: the first characters of a key left by a cut are a leak too.
PREFIX, SUFFIX = KEY[:6], KEY[-6:]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (503, {"detail": "x" * 290 + KEY}),  # across the 300 characters of a detail
        (503, b"y" * 150 + KEY.encode()),  # across the 160 characters of a snippet
        (503, b"<" + b"a" * 630 + b">" + KEY.encode()),  # across the bytes read for a snippet, after a tag
        (503, b"<" + b"a" * 648 + b">" + KEY.encode() + b"tail"),  # across the end of what is read at all
        (200, b"y" * 150 + KEY.encode()),  # a 200 that is not JSON
    ],
)
def test_a_key_across_a_cut_leaves_no_prefix(status, body):
    with pytest.raises(GatewayResponseError if status == 200 else ServerError) as info:
        answer(GET, status, body)
    assert PREFIX not in str(info.value) and PREFIX not in getattr(info.value, "detail", "")


def test_a_key_across_the_cut_of_an_invalid_field_leaves_no_prefix():
    with pytest.raises(InvalidInputError) as info:
        answer(CREATE, 422, {"invalid_fields": [{"field": "input.x", "description": "d" * 290 + KEY}]})
    assert PREFIX not in str(info.value) and PREFIX not in json.dumps(info.value.invalid_fields)


def test_a_key_echoed_in_a_prediction_is_scrubbed_before_its_error_and_log_are_cut():
    from airflow_provider_cometapi.models import _MAX_ERROR_CHARS, MAX_LOG_CHARS, Prediction

    body = {
        "id": "abc123",
        "status": "failed",
        "error": "e" * (_MAX_ERROR_CHARS - 4) + KEY,
        "logs": KEY + "\n" + "l" * (MAX_LOG_CHARS - 8),  # the newest part kept begins inside the key
        "input": {"prompt": f"use {KEY}", KEY: [KEY, 1]},
    }
    prediction = Prediction.from_api(answer(GET, 200, body))
    assert PREFIX not in (prediction.error or "") and SUFFIX not in prediction.logs
    assert prediction.to_dict()["input"] == {"prompt": "use ***", "***": ["***", 1]}
    assert KEY not in json.dumps(prediction.to_dict()) and KEY not in json.dumps(dict(prediction.raw))


def test_an_answer_without_the_key_is_returned_as_parsed():
    from airflow_provider_cometapi.responses import scrubbed

    value = {"id": "abc123", "input": {"prompt": "a fox"}, "output": ["https://x/y.png"], "n": 1.5}
    assert scrubbed(value, KEY) is value
    assert scrubbed(value, "") is value


def test_a_short_key_does_not_corrupt_the_ids_that_hold_it_by_chance():
    body = json.dumps({"id": "qxndncxbptgrd32xmr9jbstk3b", "status": "processing"}).encode()
    assert read_response(GET, 200, {}, body, conn_id="c", secret="k")["id"] == "qxndncxbptgrd32xmr9jbstk3b"


def test_a_key_spelled_with_json_escapes_is_scrubbed_too(monkeypatch):
    from airflow_provider_cometapi import responses

    escaped = "".join(f"\\u{ord(char):04x}" for char in KEY)  # the key, every character escaped
    body = ('{"id": "abc123", "status": "failed", "error": "echo ' + escaped + '"}').encode()
    payload = read_response(GET, 200, {}, body, conn_id="c", secret=KEY)
    assert payload["error"] == "echo ***"

    # An answer that cannot spell the key (its bytes absent, no \\u or \\/ escape) is not walked.
    walks = []
    monkeypatch.setattr(responses, "scrubbed", lambda value, secret: walks.append(value) or value)
    plain = json.dumps({"id": "abc123", "status": "processing", "logs": "step 1\nstep 2"}).encode()
    assert read_response(GET, 200, {}, plain, conn_id="c", secret=KEY)["logs"] == "step 1\nstep 2"
    assert walks == []
    read_response(GET, 200, {}, plain.replace(b"step 1", KEY.encode()), conn_id="c", secret=KEY)
    assert len(walks) == 1


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"Retry-After": "9" * 400}, None, 86400.0),
        ({}, {"retry_after": int("9" * 400)}, 86400.0),
        ({}, {"retry_after": float("nan")}, 0.0),
        ({}, {"retry_after": -5}, 0.0),
        ({}, {"retry_after": True}, None),
        ({"Retry-After": "soon"}, None, None),
        ({"Retry-After": "1e999"}, None, 86400.0),
    ],
)
def test_retry_after_is_clamped_never_raises(headers, body, expected):
    assert retry_after_seconds(headers, body) == expected


def test_a_deeply_nested_answer_is_a_gateway_error_not_a_recursion_error():
    with pytest.raises(GatewayResponseError, match="not valid JSON"):
        answer(GET, 200, b"[" * 100_000 + b"]" * 100_000)


def test_error_details_are_shortened():
    with pytest.raises(ServerError) as info:
        answer(GET, 503, {"detail": "x" * 10_000})
    assert len(str(info.value)) < 1000


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://host/x.png", "javascript:alert(1)", "", "no-scheme", 42])
def test_output_schemes_other_than_http_and_data_are_refused(url):
    with pytest.raises(UnsupportedOutputURLError) as info:
        output_scheme(url)
    assert not info.value.transient


def test_data_output_decodes_bounds_and_reports_media_type():
    stream = data_output("data:image/png;base64,aGVsbG8=", limit=100)
    assert (stream.media_type, stream.length, b"".join(stream.chunks)) == ("image/png", 5, b"hello")
    assert b"".join(data_output("data:,hi%20there", limit=100).chunks) == b"hi there"
    with pytest.raises(OutputTooLargeError) as info:
        data_output("data:image/png;base64," + "A" * 4000, limit=100)
    assert info.value.limit == 100
    with pytest.raises(MalformedOutputError):
        data_output("data:image/png;base64,!!!", limit=100)
    with pytest.raises(MalformedOutputError):
        data_output("data:image/png;base64", limit=100)


def test_bounded_chunks_stops_past_the_limit_and_short_of_the_announced_size():
    assert b"".join(bounded_chunks([b"ab", b"cd"], url="u", announced=4, limit=10)) == b"abcd"
    with pytest.raises(OutputTooLargeError, match="before|is 11 bytes"):
        next(bounded_chunks([b"x"], url="u", announced=11, limit=10))
    endless = (b"x" * 4 for _ in iter(int, 1))
    with pytest.raises(OutputTooLargeError) as info:
        for _ in bounded_chunks(endless, url="https://h/o.png", announced=None, limit=10):
            pass
    assert "https://h/o.png" in str(info.value) and info.value.size == 12
    with pytest.raises(IncompleteDownloadError) as info:
        list(bounded_chunks([b"ab"], url="u", announced=4, limit=10))
    assert info.value.transient
    with pytest.raises(IncompleteDownloadError):
        list(bounded_chunks([b"abcdef"], url="u", announced=4, limit=10))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Content-Length": "12"}, 12),
        ({"content-length": "12", "Content-Encoding": "gzip"}, None),
        ({"Content-Length": "-1"}, None),
        ({"Content-Length": "9" * 40}, None),
        ({}, None),
    ],
)
def test_announced_length(headers, expected):
    assert announced_length(headers) == expected


def test_download_errors_name_the_file_without_its_query():
    request = download_request("https://files.example/o.png?sig=abc")
    with pytest.raises(OutputExpiredError) as info:
        answer(request, 404, b"x" * 100)
    assert "sig=abc" not in str(info.value) and "https://files.example/o.png" in str(info.value)


def test_a_read_timeout_while_the_body_streams_is_a_timeout():
    # requests raises it as a ConnectionError around urllib3's ReadTimeoutError (iter_content).
    import requests
    from urllib3.exceptions import ProtocolError, ReadTimeoutError

    from airflow_provider_cometapi.exceptions import CometAPIConnectionError, CometAPITimeoutError

    settings = CometAPISettings(conn_id="my_conn", base_url="http://gateway.example")
    streamed = requests.ConnectionError(ReadTimeoutError(None, "/x", "Read timed out."))  # type: ignore[arg-type]
    assert isinstance(requests_failure(streamed, GET, settings, timed_out_after=None), CometAPITimeoutError)
    broken = requests.ConnectionError(ProtocolError("Connection broken: IncompleteRead"))
    error = requests_failure(broken, GET, settings, timed_out_after=None)
    assert isinstance(error, CometAPIConnectionError) and error.request_sent


def test_a_redirect_to_another_scheme_names_it_without_the_query_and_is_not_transient():
    import aiohttp
    import requests
    from yarl import URL

    from airflow_provider_cometapi.responses import aiohttp_failure

    settings = CometAPISettings(conn_id="my_conn", base_url="http://gateway.example")
    found = requests.exceptions.InvalidSchema("No connection adapters were found for 'file:///etc/passwd?sig=abc'")
    moved = aiohttp.NonHttpUrlRedirectClientError(URL("ftp://host/x.png?sig=abc"))
    for error, scheme in (
        (requests_failure(found, GET, settings, timed_out_after=None), "file"),
        (aiohttp_failure(moved, GET, settings, total=5.0), "ftp"),
    ):
        assert isinstance(error, UnsupportedOutputURLError) and not error.transient
        assert error.scheme == scheme and f"scheme {scheme!r}" in str(error) and "sig=abc" not in str(error)
    # Without a URL in the library's words (requests says so for a SOCKS proxy it cannot use): no scheme made up.
    unnamed = requests_failure(
        requests.exceptions.InvalidSchema("Missing dependencies"), GET, settings, timed_out_after=None
    )
    assert isinstance(unnamed, UnsupportedOutputURLError) and unnamed.scheme == ""
