from __future__ import annotations

import json

import pytest

from airflow_provider_cometapi.api import (
    Operation,
    api_url,
    cancel_prediction_request,
    create_prediction_request,
    get_prediction_request,
    read_response,
    retry_after_seconds,
)
from airflow_provider_cometapi.exceptions import (
    AuthenticationError,
    CometAPIHTTPError,
    GatewayResponseError,
    InsufficientCreditError,
    InvalidInputError,
    ModelNotFoundError,
    PredictionNotFoundError,
    RateLimitedError,
    ServerError,
)

GET = get_prediction_request("abc123")
CREATE = create_prediction_request("black-forest-labs/flux-schnell", {"prompt": "x"}, wait=None)


def answer(request, status, body, headers=None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return read_response(request, status, headers or {}, raw, conn_id="my_conn")


def test_model_route_keeps_the_slash_and_version():
    assert CREATE.path == "/replicate/v1/models/black-forest-labs/flux-schnell/predictions"
    versioned = create_prediction_request("owner/model:abc", {"prompt": "x"}, wait=None)
    assert versioned.path == "/replicate/v1/models/owner/model:abc/predictions"
    assert versioned.json == {"input": {"prompt": "x"}}
    assert not versioned.idempotent


def test_prefer_wait_uses_the_generic_route():
    request = create_prediction_request("black-forest-labs/flux-schnell", {"prompt": "x"}, wait=10)
    assert request.path == "/replicate/v1/predictions"
    assert request.headers == {"Prefer": "wait=10"}
    assert request.json == {"model": "black-forest-labs/flux-schnell", "input": {"prompt": "x"}}
    assert request.read_timeout_extra == 10


@pytest.mark.parametrize("wait", [0, 61, 2.5, True])
def test_prefer_wait_bounds(wait):
    with pytest.raises(InvalidInputError, match="from 1 to 60"):
        create_prediction_request("black-forest-labs/flux-schnell", {"prompt": "x"}, wait=wait)


def test_query_and_cancel_paths():
    assert GET.path == "/replicate/v1/predictions/abc123"
    assert GET.idempotent and GET.operation is Operation.GET
    assert cancel_prediction_request("abc123").path == "/replicate/v1/predictions/abc123/cancel"


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("https://api.cometapi.com", "https://api.cometapi.com/v1/models"),
        ("https://api.cometapi.com/", "https://api.cometapi.com/v1/models"),
        ("https://proxy.example/cometapi/", "https://proxy.example/cometapi/v1/models"),
    ],
)
def test_api_url_joins_base_and_path(base, expected):
    assert api_url(base, "/v1/models") == expected


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
    from airflow_provider_cometapi.api import download_request
    from airflow_provider_cometapi.exceptions import OutputExpiredError

    request = download_request("https://files.example/out-0.png?X-Amz-Signature=secret123")
    assert "secret123" not in request.describe()
    with pytest.raises(OutputExpiredError) as info:
        answer(request, 403, b"<html>AccessDenied</html>")
    assert "secret123" not in str(info.value)
