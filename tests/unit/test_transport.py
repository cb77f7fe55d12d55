"""The blocking session: the proxy environment is honoured, and read once per origin, not per request."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests.sessions

from airflow_provider_cometapi.transport import blocking_session


class _Recorder(BaseHTTPRequestHandler):
    """Answers 200 to anything and records the request line (a proxy sees the absolute URL)."""

    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_environments_proxy_is_used_and_read_once_per_origin(recorder, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", recorder)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    reads = []
    original = requests.sessions.get_environ_proxies

    def counting(url, no_proxy=None):
        reads.append(url)
        return original(url, no_proxy=no_proxy)

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", counting)
    session = blocking_session("test-agent")
    for path in ("/a", "/b", "/c"):
        assert session.get(f"http://gateway.invalid{path}", timeout=10).text == "ok"
    session.get("http://files.invalid/image.webp", timeout=10)

    # Every request went through the proxy the environment names...
    assert _Recorder.seen == [
        "http://gateway.invalid/a",
        "http://gateway.invalid/b",
        "http://gateway.invalid/c",
        "http://files.invalid/image.webp",
    ]
    # ...and the environment was read once per origin, not once per request.
    assert reads == ["http://gateway.invalid/a", "http://files.invalid/image.webp"]


def test_no_proxy_still_bypasses_the_proxy_for_its_hosts(recorder, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens: used, it would fail
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    session = blocking_session("test-agent")
    for _ in range(2):
        assert session.get(f"{recorder}/direct", timeout=10).text == "ok"
    assert _Recorder.seen == ["/direct", "/direct"]


def test_the_remembered_origins_are_bounded(recorder, monkeypatch):
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    session = blocking_session("test-agent")
    for port in range(1, 200):
        session.merge_environment_settings(f"http://host-{port}.invalid/", {}, True, None, None)
    assert len(session._environment) <= 64


@pytest.mark.parametrize(
    ("location", "downgraded"),
    [
        ("http://files.example/o.png", True),
        ("HTTP://files.example/o.png", True),
        # What requests would still follow as plain http once it parses the header.
        ("ht\ttp://files.example/o.png", True),
        ("\x01http://files.example/o.png", True),
        (" http://files.example/o.png", True),
        ("https://files.example/o.png", False),
        ("//files.example/o.png", False),  # keeps the scheme: https
        ("/o.png", False),
    ],
)
def test_a_downgrade_is_seen_as_requests_reads_the_location(location, downgraded):
    from urllib.parse import urlparse

    from airflow_provider_cometapi.transport import downgrades

    assert downgrades("https://api.example/v1/x", location) is downgraded
    # requests follows urlparse(location).geturl() (resolve_redirects): the scheme it would use.
    assert (urlparse(location).geturl().split(":", 1)[0].lower() == "http") is downgraded
    assert downgrades("http://api.example/v1/x", location) is False  # from plain http: no downgrade
