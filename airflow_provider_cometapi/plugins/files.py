"""
Reading the files a run recorded, through ``ObjectStoragePath`` on the api-server.

Only ``StoredFile`` values reach here, and a ``StoredFile`` exists only for a URI a reader found
in the run's own records (``records.stored_file``): the name is an output's or a sidecar's,
the scheme a store's. The api-server needs what the workers needed to write them: the store's
filesystem package and, for ``s3://conn@bucket/...``, the connection named in the URI.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from airflow_provider_cometapi.plugins.records import MEDIA_TYPES, PredictionInfo, StoredFile, prediction_info

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
MAX_SIDECAR_BYTES = 1024 * 1024


class StoredFileError(Exception):
    """A recorded file cannot be read (gone, no access, no filesystem for it)."""


def _path(stored: StoredFile) -> Any:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    uri = stored.uri if "://" in stored.uri else f"file://{stored.uri}"
    try:
        return ObjectStoragePath(uri)
    except (ValueError, ImportError) as error:
        raise StoredFileError(f"no filesystem for {stored.name}: {error}") from error


def media_type(stored: StoredFile) -> str:
    """The media type of an output from its extension (the allow-list storage names files with)."""
    return MEDIA_TYPES.get(stored.name.rsplit(".", 1)[-1], "application/octet-stream")


def open_output(stored: StoredFile) -> tuple[Iterator[bytes], int | None]:
    """An output's bytes in chunks, and its size when the store tells it."""
    path = _path(stored)
    try:
        size = path.stat().st_size
        handle = path.open("rb")
    except (OSError, ValueError, ImportError) as error:
        raise StoredFileError(f"cannot read {stored.name}: {error}") from error

    def chunks() -> Iterator[bytes]:
        with handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    return chunks(), int(size) if isinstance(size, int) else None


def read_sidecar(stored: StoredFile) -> PredictionInfo | None:
    """The prediction a sidecar describes, or None when it cannot be read or is not one."""
    try:
        with _path(stored).open("rb") as handle:
            body = handle.read(MAX_SIDECAR_BYTES + 1)
    except (OSError, ValueError, ImportError, StoredFileError) as error:
        log.warning("Could not read the sidecar %s: %s", stored.name, error)
        return None
    if len(body) > MAX_SIDECAR_BYTES:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("id") != stored.prediction_id:
        return None
    # The sidecar's source URLs are redacted and expired by the time anyone reads it: not shown.
    data = {key: value for key, value in data.items() if key not in ("output", "source_urls")}
    return prediction_info(data, stored.task)


# A recorded text file (a batch manifest: about 300 bytes a line) is read up to this size.
MAX_TEXT_BYTES = 64 * 1024 * 1024


def _text_path(uri: str) -> Any:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_cometapi.plugins.records import is_store_uri

    if not is_store_uri(uri):
        raise StoredFileError("not a stored file's URI")
    return ObjectStoragePath(uri if "://" in uri else f"file://{uri}")


def stamp(uri: str) -> tuple[Any, ...]:
    """What changes when a recorded text file (a manifest) is rewritten: its size, mtime and ETag."""
    info = _text_path(uri).stat()
    return (info.st_size, info.st_mtime, info.get("ETag"))


def open_text(uri: str) -> str:
    """For readers of recorded text files (a batch manifest): the file's text."""
    with _text_path(uri).open("rb") as handle:
        data: bytes = handle.read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise StoredFileError(f"more than {MAX_TEXT_BYTES // (1024 * 1024)} MiB")
    return data.decode("utf-8", "replace")
