from __future__ import annotations

import pytest

from airflow_provider_cometapi.api import (
    Operation,
    api_url,
    cancel_prediction_request,
    create_prediction_request,
    download_request,
    get_prediction_request,
    redact_url,
    redact_urls,
    same_origin,
)
from airflow_provider_cometapi.exceptions import InvalidInputError

GET = get_prediction_request("abc123")
CREATE = create_prediction_request("black-forest-labs/flux-schnell", {"prompt": "x"}, wait=None)


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


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://files.example/a/out-0.png?X-Amz-Credential=AKIA&X-Amz-Signature=s3cr3t",
            "https://files.example/a/out-0.png",
        ),
        ("https://user:pass@files.example/x.png#frag", "https://files.example/x.png"),
        ("data:image/png;base64," + "A" * 1000, "data:image/png;base64,...(1022 chars)"),
        ("/replicate/v1/predictions/abc?x=1", "/replicate/v1/predictions/abc"),
    ],
)
def test_redact_url_drops_queries_credentials_and_inline_data(url, shown):
    assert redact_url(url) == shown
    assert redact_url(url) in download_request(url).describe() or url.startswith("/")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (  # urllib3's MaxRetryError for a TLS failure: the request path, query and all
            "HTTPSConnectionPool(host='files.example', port=443): Max retries exceeded with url: "
            "/a/out-0.png?X-Amz-Credential=AKIA&X-Amz-Signature=s3cr3t (Caused by SSLError('wrong version'))",
            "HTTPSConnectionPool(host='files.example', port=443): Max retries exceeded with url: "
            "/a/out-0.png (Caused by SSLError('wrong version'))",
        ),
        (  # through a proxy: the whole URL
            "Max retries exceeded with url: https://user:pass@files.example/x.png?sig=s3cr3t (Caused by ProxyError())",
            "Max retries exceeded with url: https://files.example/x.png (Caused by ProxyError())",
        ),
        ("InvalidURL: 'out-0.png?sig=s3cr3t'", "InvalidURL: 'out-0.png'"),
        ("Cannot connect to host files.example:443 ssl:default [Connect call failed]", None),
        ("Is the host up? It did not answer.", None),
    ],
)
def test_redact_urls_drops_queries_and_credentials_inside_text(text, shown):
    assert redact_urls(text) == (text if shown is None else shown)


def test_same_origin_only_for_the_gateway_itself():
    assert same_origin("https://api.cometapi.com/files/x.png", "https://api.cometapi.com")
    assert not same_origin("https://files.example/x.png", "https://api.cometapi.com")
    assert not same_origin("http://api.cometapi.com/x", "https://api.cometapi.com")
    assert not same_origin("http://[broken/x", "https://api.cometapi.com")


def test_cancel_after_is_sent_as_the_cancel_after_header_on_both_routes():
    model, model_input = "black-forest-labs/flux-schnell", {"prompt": "x"}
    assert create_prediction_request(model, model_input, wait=None, cancel_after=90).headers == {"Cancel-After": "90s"}
    assert create_prediction_request(model, model_input, wait=5, cancel_after=90).headers == {
        "Prefer": "wait=5",
        "Cancel-After": "90s",
    }
    assert CREATE.headers == {}  # off unless asked for


@pytest.mark.parametrize("cancel_after", [0, -1, 2.5, True])
def test_cancel_after_bounds(cancel_after):
    with pytest.raises(InvalidInputError, match="cancel_after must be a whole number of seconds"):
        create_prediction_request(
            "black-forest-labs/flux-schnell", {"prompt": "x"}, wait=None, cancel_after=cancel_after
        )


@pytest.mark.timeout(30)
def test_redacting_a_huge_text_is_linear_and_finds_the_urls_in_it():
    # Each alternative of the pattern starts only where its run of characters does: a few MB of
    # one word (a hostile answer's, inside a library's error) are read once, not once per position.
    from airflow_provider_cometapi.api import redact_urls

    for word in ("x" * 2_000_000, "a1" * 1_000_000, "ab+" * 700_000):
        assert redact_urls(word) == word
    text = "x" * 100_000 + " 1https://u:p@h/a?sig=1 =see:/x?q#f z9s3://b/k?token=t"
    assert redact_urls(text).endswith(" 1https://h/a =see:/x z9s3://b/k")
