"""
Storing prediction outputs in object storage: the destination, file names, and atomic writes.

Everything here is a plain function of its inputs (no hook, no Airflow context), so each
operator that stores outputs uses the same rules:

* **The destination** is checked before any request: an absolute local path or a URI of a
  store that keeps files beyond the worker's process (``check_destination``,
  ``prepare_destination``).
* **Names** come only from a checked prediction id, the output's index and an extension from an
  allow-list of media types (``output_name``, ``sidecar_name``). The gateway's answer never
  chooses a folder or an executable suffix: an unknown type is stored as ``.bin``.
* **Paths** are proven to lie directly in the destination before anything is written
  (``contained_path``): local paths with symbolic links and ``..`` resolved, object store keys
  normalised.
* **Writes are atomic**: bytes go to a hidden sibling ``.<name>.partial-<hex>`` and move into
  place only once complete (a rename on local disks; an object store object appears only once
  its upload completed). A failed download, or one over ``max_output_bytes``, leaves nothing at
  the final path and removes its temporary file; one killed outright leaves a temporary file
  that ``remove_stale_partials`` recognises and removes on the next run.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from airflow_provider_cometapi.api import redact_url
from airflow_provider_cometapi.cost import Prices, cost_of, image_count
from airflow_provider_cometapi.exceptions import (
    DestinationNotWritableError,
    InvalidDestinationError,
    InvalidPredictionIdError,
    OutputExpiredError,
    PredictionNotStorableError,
    UnsafeOutputPathError,
)
from airflow_provider_cometapi.models import check_prediction_id

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_cometapi.models import Prediction
    from airflow_provider_cometapi.responses import OutputStream

log = logging.getLogger(__name__)
T = TypeVar("T")

# --- Extensions -----------------------------------------------------------------------------

# The media the gateway's models make, and nothing that runs: no SVG (it can carry scripts that
# run when a browser opens it), HTML, text or code. Any other type is stored as ``.bin``.
MEDIA_EXTENSIONS: Mapping[str, str] = {
    "image/webp": "webp",
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/gif": "gif",
    "image/avif": "avif",
    "image/heic": "heic",
    "image/heif": "heif",
    "image/bmp": "bmp",
    "image/tiff": "tiff",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/quicktime": "mov",
    "audio/mpeg": "mp3",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/ogg": "ogg",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
}
UNKNOWN_EXTENSION = "bin"
# Types that say nothing about the content: only then may the URL's suffix tell, and only a
# suffix of the allow-list.
GENERIC_MEDIA_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
_SUFFIXES: Mapping[str, str] = {
    **{extension: extension for extension in MEDIA_EXTENSIONS.values()},
    "jpeg": "jpg",
    "tif": "tiff",
}


def extension_for(media_type: str, url: str = "") -> str:
    """
    The file extension for an output: from its media type through the allow-list, else ``bin``.

    The URL's suffix is used only when the host sent no type or a generic one
    (``application/octet-stream``), and only when that suffix is itself allowed: a ``.py`` or
    ``.html`` in a URL never becomes an extension.
    """
    media_type = media_type.split(";", 1)[0].strip().lower()
    if media_type in MEDIA_EXTENSIONS:
        return MEDIA_EXTENSIONS[media_type]
    if media_type in GENERIC_MEDIA_TYPES and url[:8].lower().startswith(("http://", "https://")):
        try:
            last = urlsplit(url).path.rsplit("/", 1)[-1]
        except ValueError:
            return UNKNOWN_EXTENSION
        stem, dot, suffix = last.rpartition(".")
        if dot and stem:
            return _SUFFIXES.get(suffix.lower(), UNKNOWN_EXTENSION)
    return UNKNOWN_EXTENSION


# --- Names ----------------------------------------------------------------------------------


def output_name(prediction_id: str, index: int, media_type: str, url: str = "") -> str:
    """``<prediction_id>_<index>.<extension>``: the file name of one output."""
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise UnsafeOutputPathError(f"Refusing to name an output with index {index!r}: expected a whole number >= 0.")
    return f"{_checked_id(prediction_id)}_{index}.{extension_for(media_type, url)}"


def sidecar_name(prediction_id: str) -> str:
    """``<prediction_id>.json``: the file name of a prediction's sidecar."""
    return f"{_checked_id(prediction_id)}.json"


def partial_name(name: str) -> str:
    """A fresh temporary name beside ``name``, of the form ``remove_stale_partials`` recognises."""
    return f".{name}{_PARTIAL_MARK}-{uuid.uuid4().hex}"


_PARTIAL_MARK = ".partial"
# ``.<final name>.partial`` with an optional ``-<hex>`` (every release so far wrote ``-<uuid hex>``).
_PARTIAL = re.compile(r"\.(?P<final>[A-Za-z0-9][A-Za-z0-9._-]*)\.partial(?:-[0-9a-f]{1,64})?", re.ASCII)
# One path component that cannot climb, be absolute or be hidden except as a temporary file.
_FILE_NAME = re.compile(r"\.?[A-Za-z0-9][A-Za-z0-9._-]{0,250}", re.ASCII)


def _checked_id(prediction_id: Any) -> str:
    # Ids answered by the gateway are checked in the hook already; the names are built here only
    # from an id that passes the same check again, exactly (no stripping).
    try:
        if check_prediction_id(prediction_id) == prediction_id:
            return str(prediction_id)
    except InvalidPredictionIdError:
        pass
    shown = prediction_id[:80] if isinstance(prediction_id, str) else prediction_id
    raise UnsafeOutputPathError(
        f"Refusing to name a file after {shown!r}: it is not a prediction id (up to 128 letters, digits, '-' "
        "and '_'), so it could place a file outside the destination. Nothing was written. If the id came "
        "from the gateway, this is a gateway fault: report it to CometAPI."
    )


def _owner_of_partial(name: str) -> str | None:
    """The prediction id whose output or sidecar the temporary file ``name`` was for, if it is one."""
    match = _PARTIAL.fullmatch(name)
    if match is None:
        return None
    final = match["final"]
    if final.endswith(".json"):  # a sidecar; no output has the extension json
        return final[: -len(".json")]
    stem, dot, _ = final.rpartition(".")
    owner, underscore, index = stem.rpartition("_")
    return owner if dot and underscore and index.isdigit() else None


# --- The destination ------------------------------------------------------------------------

# Schemes an fsspec file system serves that cannot keep a worker's files for a later task.
UNSUITABLE_SCHEMES: Mapping[str, str] = {
    "memory": "each process has its own in-memory file system, so the files vanish when the task ends",
    "http": "HTTP file systems are read-only",
    "https": "HTTP file systems are read-only",
    "data": "data: URIs are read-only",
    "github": "the GitHub file system is read-only",
    "git": "the git file system is read-only",
    "zip": "archive file systems are not shared folders",
    "tar": "archive file systems are not shared folders",
    "libarchive": "archive file systems are not shared folders",
    "reference": "reference file systems are read-only",
}
_LOCAL_SCHEMES = ("", "file", "local")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*", re.ASCII)
_EXAMPLES = "for example 'file:///data/images', '/data/images' or 's3://aws_default@my-bucket/images'"


def is_templated(value: Any) -> bool:
    """True for a string Airflow still has to render (``{{ ... }}`` or ``{% ... %}``)."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def check_destination(destination: Any) -> None:
    """
    Refuse, without any I/O, a destination no worker can store outputs in.

    Accepted: an ``ObjectStoragePath``, or a string that is an absolute local path
    (``/data/images``) or a URI (``file:///data/images``, ``s3://conn@bucket/prefix``).

    :raises InvalidDestinationError: empty, relative, not a path or URI, or a scheme that cannot
        hold a worker's files (``memory://`` is per process; ``http(s)://`` is read-only).
    """
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    if isinstance(destination, ObjectStoragePath):
        scheme, path, shown = (destination.protocol or "").lower(), destination.path, str(destination)
    elif isinstance(destination, str | PurePath):
        shown = str(destination)
        scheme, path = _split(shown)
    else:
        raise InvalidDestinationError(
            f"The destination must be a folder as a URI or absolute path (a str or an ObjectStoragePath), not "
            f"{type(destination).__name__} {repr(destination)[:100]}: {_EXAMPLES}."
        )
    if not shown.strip():
        raise InvalidDestinationError(f"The destination is empty. Give the folder to store outputs in, {_EXAMPLES}.")
    if scheme in UNSUITABLE_SCHEMES:
        raise InvalidDestinationError(
            f"The destination {shown!r} cannot hold a worker's files: {UNSUITABLE_SCHEMES[scheme]}. Use a folder "
            f"every worker can reach, {_EXAMPLES}."
        )
    if scheme not in _LOCAL_SCHEMES and not path.strip("/"):
        raise InvalidDestinationError(
            f"The destination {shown!r} names no bucket or folder. Give the folder to store outputs in, {_EXAMPLES}."
        )
    if scheme in _LOCAL_SCHEMES and not path.startswith("/"):
        raise InvalidDestinationError(
            f"The destination {shown!r} is a relative path: the files would land in whatever folder the worker "
            f"runs in. Give an absolute path or a URI, {_EXAMPLES} (a file URI has three slashes)."
        )


def _split(destination: str) -> tuple[str, str]:
    """(scheme, path) of a destination string; scheme ``""`` for a plain local path."""
    scheme, sep, rest = destination.partition("://")
    if not sep:
        return "", destination
    if not _SCHEME.fullmatch(scheme.lower()):
        raise InvalidDestinationError(
            f"The destination {destination[:200]!r} is neither a path nor a URI (the scheme {scheme[:40]!r} is not "
            f"one). Give an absolute path or a URI, {_EXAMPLES}."
        )
    return scheme.lower(), rest


def destination_folder(destination: Any) -> ObjectStoragePath:
    """The destination as an ``ObjectStoragePath``, once ``check_destination`` accepts it."""
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    check_destination(destination)
    if isinstance(destination, ObjectStoragePath):
        return destination
    try:
        folder = ObjectStoragePath(str(destination))
        folder.fs  # noqa: B018 - Airflow 3.1 resolves the file system only here
    except ValueError as error:  # "Unsupported filesystem": no fsspec implementation of the scheme
        raise _no_file_system(str(destination), error) from error
    return folder


def _no_file_system(destination: str, error: Exception) -> InvalidDestinationError:
    return InvalidDestinationError(
        f"The destination {destination!r} names a store no installed file system handles ({error}). Install the "
        "Airflow provider of that store (for s3://, apache-airflow-providers-amazon[s3fs]) or fix the URI."
    )


def prepare_destination(destination: Any) -> ObjectStoragePath:
    """
    Check the destination and create the folder, before any request is made.

    :raises InvalidDestinationError: see ``check_destination``.
    :raises DestinationNotWritableError: the folder cannot be created, or a local folder written.
    """
    directory = destination_folder(destination)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # A local folder can be checked without writing; object stores answer on the first write.
        if _is_local(directory) and not os.access(directory.path, os.W_OK):
            raise PermissionError(f"no write permission on {directory.path}")
    except (ImportError, ValueError) as error:  # the store's package is missing, or Airflow knows no such store
        raise _no_file_system(str(directory), error) from error
    except OSError as error:
        raise DestinationNotWritableError(
            f"Cannot write to the destination {directory}: {error}. Choose a `destination` the worker can "
            "write to (for object storage, a connection in the URL with write access to the bucket)."
        ) from error
    return directory


def _is_local(directory: ObjectStoragePath) -> bool:
    return (directory.protocol or "") in _LOCAL_SCHEMES


# --- Paths ----------------------------------------------------------------------------------


def contained_path(directory: ObjectStoragePath, name: str) -> ObjectStoragePath:
    """
    ``directory / name``, once proven to be a file directly in ``directory``.

    Local paths are compared with every symbolic link and ``..`` resolved, so a link planted at
    the name that points elsewhere is refused; object store keys are compared normalised.

    :raises UnsafeOutputPathError: the path would be anywhere else; nothing is written.
    """
    if not isinstance(name, str) or not _FILE_NAME.fullmatch(name):
        raise _unsafe(directory, repr(name)[:100], "is not a plain file name")
    target = directory / name
    if _is_local(directory):
        if not os.path.isabs(directory.path):
            raise InvalidDestinationError(
                f"The destination {directory} is a relative path. Give an absolute path or a URI, {_EXAMPLES}."
            )
        root = os.path.realpath(directory.path)
        resolved = os.path.realpath(target.path)
        if os.path.dirname(resolved) != root:
            raise _unsafe(directory, name, f"resolves to {resolved}, which is not directly in {root}")
    else:
        prefix = directory.path.rstrip("/")
        expected = f"{prefix}/{name}"
        if (
            target.protocol != directory.protocol
            or target.path != expected
            or posixpath.normpath(expected) != expected
            or target.storage_options != directory.storage_options
        ):
            raise _unsafe(directory, name, f"maps to {target}, not to a key directly under {directory}")
    return target


def _unsafe(directory: ObjectStoragePath, name: str, why: str) -> UnsafeOutputPathError:
    return UnsafeOutputPathError(
        f"Refusing to write {name} in the destination {directory}: the path {why}. Nothing was written. "
        "Remove the link or file that is in the way, or choose another destination."
    )


# --- Writing --------------------------------------------------------------------------------


def store_output(
    stream: OutputStream, directory: ObjectStoragePath, prediction_id: str, index: int
) -> ObjectStoragePath:
    """
    Write one output into ``directory`` as ``<prediction_id>_<index>.<extension>``, atomically.

    Meant as the ``consume`` of ``CometAPIHook.stream_output``; a re-run replaces the same file.

    :return: the stored file.
    :raises UnsafeOutputPathError: the id or the path does not stay in ``directory``.
    :raises DestinationNotWritableError: the store refused the write.
    :raises OutputTooLargeError: from the stream; nothing is left at the final path.
    """
    name = output_name(prediction_id, index, stream.media_type, stream.url)
    return _store(directory, name, stream.chunks)


def store_sidecar(metadata: Mapping[str, Any], directory: ObjectStoragePath, prediction_id: str) -> ObjectStoragePath:
    """Write ``metadata`` as ``<prediction_id>.json`` into ``directory``, the same way as an output."""
    body = json.dumps(metadata, indent=2, sort_keys=True).encode()
    return _store(directory, sidecar_name(prediction_id), [body])


def store_file(directory: ObjectStoragePath, name: str, chunks: Iterable[bytes]) -> ObjectStoragePath:
    """
    Write ``chunks`` as ``name`` directly in ``directory``, atomically: the one write of outputs,
    sidecars and batch manifests. A reader sees the old file or the whole new one, never a part.
    """
    return _store(directory, name, chunks)


def _store(directory: ObjectStoragePath, name: str, chunks: Iterable[bytes]) -> ObjectStoragePath:
    target = contained_path(directory, name)
    temporary = contained_path(directory, partial_name(name))
    try:
        sink = _writing(target, temporary.open, "wb")
        try:
            # The source's errors (an interrupted download, a size limit) pass as they are.
            for chunk in chunks:
                _writing(target, sink.write, chunk)
        except BaseException:
            with suppress(Exception):
                sink.close()
            raise
        _writing(target, sink.close)
        _writing(target, _move, temporary, target)
    except BaseException:
        _remove_quietly(temporary)
        raise
    return target


def _move(temporary: ObjectStoragePath, target: ObjectStoragePath) -> None:
    if _is_local(target):
        # A rename: atomic, replaces a file (or a link) at the target and never moves into a folder.
        os.replace(temporary.path, target.path)
    else:
        temporary.move(target)


def _writing(target: ObjectStoragePath, operation: Callable[..., T], *args: Any) -> T:
    try:
        return operation(*args)
    except OSError as error:
        raise DestinationNotWritableError(
            f"Could not write {target}: {error}. Choose a `destination` the worker can write to, with room for "
            "the outputs (for object storage, a connection with write access to the bucket)."
        ) from error


def _remove_quietly(path: ObjectStoragePath) -> None:
    try:
        if path.exists():
            path.unlink()
    except Exception:  # cleanup must not hide the error that caused it
        log.warning("Could not remove the temporary file %s", path, exc_info=True)


def remove_stale_partials(directory: ObjectStoragePath, prediction_ids: Iterable[str]) -> list[str]:
    """
    Remove the temporary files an earlier, killed run left for these predictions' files.

    One listing of ``directory`` whatever the number of ids (a batch passes all of its ids
    at once). Best effort: a store that refuses to list or delete (a write-only bucket policy)
    is logged and skipped, as leftovers never reach a final name.

    :return: the names removed.
    """
    owners = {_checked_id(prediction_id) for prediction_id in prediction_ids}
    removed: list[str] = []
    if not owners:
        return removed
    try:
        entries = [entry.name for entry in directory.iterdir()] if directory.exists() else []
        for name in entries:
            if _owner_of_partial(name) in owners:
                (directory / name).unlink()  # a link is removed, never what it points to
                removed.append(name)
    except OSError as error:
        log.warning("Could not remove leftover temporary files in %s: %s", directory, error)
    return removed


# --- One prediction, whole -----------------------------------------------------------------


@dataclass(frozen=True)
class StoredPrediction:
    """What storing one prediction wrote: its outputs in order, and the sidecar (if written)."""

    prediction_id: str
    outputs: list[str]
    sidecar: str | None

    @property
    def uris(self) -> list[str]:
        """Outputs first, then the sidecar."""
        return self.outputs + ([self.sidecar] if self.sidecar else [])


def check_storable(prediction: Prediction) -> None:
    """Raise unless ``prediction`` succeeded with outputs whose files still exist."""
    if not prediction.succeeded:
        raise PredictionNotStorableError(
            f"Prediction {prediction.id} is {prediction.status}, not succeeded: there is nothing to store. "
            "Run this task after CreatePredictionOperator (waiting) or PredictionSensor."
        )
    if not prediction.output and not prediction.data_removed:
        raise PredictionNotStorableError(
            f"Prediction {prediction.id} succeeded but has no output to store. Check its model and input: "
            "this model made no files for it."
        )
    if prediction.data_removed or not prediction.output:
        raise OutputExpiredError(
            f"The outputs of prediction {prediction.id} have expired (data_removed): output files are kept "
            "about an hour after the prediction finishes. Store them in the same DAG run, right after "
            "the prediction."
        )


def store_prediction(
    prediction: Prediction,
    directory: ObjectStoragePath,
    stream_output: Callable[[str, Callable[[OutputStream], ObjectStoragePath]], ObjectStoragePath],
    *,
    write_sidecar: bool = True,
    on_stored: Callable[[int, int, ObjectStoragePath], None] | None = None,
    remove_partials: bool = True,
    prices: Prices | None = None,
) -> StoredPrediction:
    """
    Store every output of a succeeded ``prediction`` and its sidecar in ``directory``.

    The one code path of every operator that stores outputs. ``stream_output`` is the hook's
    (``CometAPIHook.stream_output``): it fetches each output under the retry policy and the size
    and time bounds, and hands it to ``store_output``. Leftovers of a killed earlier run for this
    prediction are removed first.

    :param on_stored: called with (index, count, path) after each output, e.g. to log progress.
    :param remove_partials: look for leftovers first (one listing of ``directory``); a batch
        passes False and removes those of all its predictions in one listing instead.
    :param prices: the connection's (``hook.settings.prices``), for the sidecar's ``cost``.
    :raises PredictionNotStorableError: the prediction has not succeeded, or has no outputs.
    :raises OutputExpiredError: its files are gone.
    """
    check_storable(prediction)
    for name in remove_stale_partials(directory, [prediction.id]) if remove_partials else ():
        log.info("Removed %s, left by an interrupted earlier run", name)
    outputs: list[str] = []
    for index, url in enumerate(prediction.output):
        path = stream_output(url, partial(store_output, directory=directory, prediction_id=prediction.id, index=index))
        if on_stored is not None:
            on_stored(index, len(prediction.output), path)
        outputs.append(str(path))
    sidecar = (
        str(store_sidecar(sidecar_metadata(prediction, outputs, prices), directory, prediction.id))
        if write_sidecar
        else None
    )
    return StoredPrediction(prediction.id, outputs, sidecar)


# --- The sidecar ----------------------------------------------------------------------------

# Prediction fields copied into the sidecar, so a later pipeline knows how each image was made.
SIDECAR_FIELDS = ("id", "model", "version", "input", "metrics", "created_at", "started_at", "completed_at", "source")


def sidecar_metadata(prediction: Prediction, stored: Sequence[str], prices: Prices | None = None) -> dict[str, Any]:
    """
    What the sidecar records: the fields above, ``status``, ``source_urls``, ``stored``, and
    ``images``, ``cost`` and ``currency`` (``cost`` is ``None`` without ``prices`` or without a
    price for the prediction's model; ``currency`` is ``None`` without ``prices``).

    ``source_urls`` are shown as messages show them: without query (a signed URL's signature
    and credential), fragment or user info, ``data:`` URIs as their type and length.
    """
    data = prediction.to_dict()
    metadata = {key: data.get(key) for key in SIDECAR_FIELDS}
    metadata.update(
        status=prediction.status,
        source_urls=[redact_url(url) for url in prediction.output],
        stored=list(stored),
        images=image_count(prediction),
        cost=None if prices is None else cost_of(prediction, prices),
        currency=None if prices is None else prices.currency,
    )
    return metadata
