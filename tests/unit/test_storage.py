from __future__ import annotations

import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_cometapi.exceptions import CometAPIError
from airflow_provider_cometapi.storage import (
    IncompleteDownloadError,
    decode_data_uri,
    extension_for,
    write_atomically,
)


@pytest.mark.parametrize(
    ("content_type", "url", "expected"),
    [
        ("image/webp", "https://x/out-0.webp", "webp"),
        ("image/jpeg; charset=binary", "https://x/out-0", "jpg"),
        ("application/octet-stream", "https://x/out-0.png?sig=1", "png"),
        (None, "https://x/out-0.jpeg", "jpg"),
        (None, "https://x/out-0", "bin"),
        ("image/png", "data:image/png;base64,AAAA", "png"),
    ],
)
def test_extension_for(content_type, url, expected):
    assert extension_for(content_type, url) == expected


def test_decode_data_uri():
    assert decode_data_uri("data:image/png;base64,aGVsbG8=") == ("image/png", b"hello")
    assert decode_data_uri("data:text/plain,hi%20there") == ("text/plain", b"hi there")
    with pytest.raises(CometAPIError, match="Undecodable"):
        decode_data_uri("data:image/png;base64,!!!")
    with pytest.raises(CometAPIError, match="Malformed"):
        decode_data_uri("data:image/png;base64")


def test_write_is_atomic_when_the_stream_breaks(tmp_path):
    folder = ObjectStoragePath(tmp_path.as_uri())
    (tmp_path / "out.png").write_bytes(b"previous complete file")

    def broken_stream():
        yield b"first half"
        raise ConnectionResetError("peer went away")

    with pytest.raises(ConnectionResetError):
        write_atomically(folder / "out.png", broken_stream())
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    assert (tmp_path / "out.png").read_bytes() == b"previous complete file"


def test_size_mismatch_leaves_nothing(tmp_path):
    with pytest.raises(IncompleteDownloadError, match="announced 100"):
        write_atomically(ObjectStoragePath(tmp_path.as_uri()) / "out.png", [b"x" * 10], expected_size=100)
    assert list(tmp_path.iterdir()) == []


def test_complete_write(tmp_path):
    assert write_atomically(ObjectStoragePath(tmp_path.as_uri()) / "out.png", [b"ab", b"cd"], expected_size=4) == 4
    assert (tmp_path / "out.png").read_bytes() == b"abcd"
