"""
Writing prediction outputs to object storage: names, extensions, ``data:`` URIs, atomic writes.

A file reaches its final path only once it is complete: bytes go to a hidden temporary object
beside it, its size is checked, then it is moved into place (a rename on local disks; on object
stores an object only appears once its upload completed). A failed or interrupted download
leaves nothing at the final path, and a re-run replaces the file instead of adding another.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes, urlsplit

from airflow_provider_cometapi.exceptions import CometAPIError, IncompleteDownloadError

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

_EXTENSIONS = {"image/webp": "webp", "image/png": "png", "image/jpeg": "jpg", "image/jpg": "jpg", "image/gif": "gif"}
CHUNK_SIZE = 256 * 1024


def extension_for(content_type: str | None, url: str) -> str:
    """The file extension from the content type, else from the URL's path, else ``bin``."""
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime in _EXTENSIONS:
        return _EXTENSIONS[mime]
    suffix = urlsplit(url).path.rsplit("/", 1)[-1].rpartition(".")[2].lower() if not url.startswith("data:") else ""
    if suffix and suffix.isalnum() and len(suffix) <= 5:
        return "jpg" if suffix == "jpeg" else suffix
    guessed = mimetypes.guess_extension(mime) if mime else None
    return guessed.lstrip(".") if guessed else "bin"


def decode_data_uri(uri: str) -> tuple[str, bytes]:
    """``data:image/png;base64,...`` -> (``image/png``, bytes)."""
    header, sep, data = uri.partition(",")
    if not header.startswith("data:") or not sep:
        raise CometAPIError(f"Malformed data: URI in the prediction output (starts {uri[:40]!r}).")
    params = header[len("data:") :].split(";")
    mime = params[0] or "text/plain"
    try:
        payload = base64.b64decode(data, validate=True) if "base64" in params[1:] else unquote_to_bytes(data)
    except (binascii.Error, ValueError) as error:
        raise CometAPIError(f"Undecodable data: URI in the prediction output: {error}.") from error
    return mime, payload


def write_atomically(target: ObjectStoragePath, chunks: Iterable[bytes], *, expected_size: int | None = None) -> int:
    """Write ``chunks`` to ``target`` through a temporary sibling; return the size written."""
    temporary = target.parent / f".{target.name}.partial-{uuid.uuid4().hex}"
    written = 0
    try:
        with temporary.open("wb") as sink:
            for chunk in chunks:
                sink.write(chunk)
                written += len(chunk)
        if expected_size is not None and written != expected_size:
            raise IncompleteDownloadError(
                f"Downloading {target.name} gave {written} bytes where the file host announced "
                f"{expected_size}; the download was interrupted.",
                status_code=200,
            )
        temporary.move(target)
    except BaseException:
        _remove_quietly(temporary)
        raise
    return written


def _remove_quietly(path: ObjectStoragePath) -> None:
    try:
        if path.exists():
            path.unlink()
    except Exception:  # cleanup must not hide the error that caused it
        pass
