"""
The journal beside a batch manifest: each prediction id made durable the moment its create
answers, so that a worker killed between two manifest checkpoints loses no id.

A manifest is rewritten whole, at most every few seconds. In between, each id goes to the
journal, and a later try replays the journal into the manifest (``replay``); each checkpoint
that wrote the manifest empties it. Two kinds, one interface (``BatchJournal``):

- ``FileJournal``, beside a manifest on a local disk or shared file system: one JSON line per id,
  one ``write`` to a file opened for appending, which a killed process does not lose.
- ``ObjectJournal``, beside a manifest in an object store, which cannot append: one empty object
  per id, its name carrying the id. A PUT is atomic and durable once it answers; reading is one
  listing (names only), and emptying deletes them in the background.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import TYPE_CHECKING, Protocol

from airflow_provider_cometapi.batch.manifest import ManifestEntry, corrupt_manifest, is_count
from airflow_provider_cometapi.exceptions import BatchManifestError, InvalidPredictionIdError
from airflow_provider_cometapi.models import check_prediction_id

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

LOCAL_PROTOCOLS = frozenset({"", "file", "local"})


class BatchJournal(Protocol):
    """Where a batch's ids are durable between checkpoints; every method is safe from any thread."""

    location: str

    def append(self, index: int, prediction_id: str, attempt: int = 1) -> None:
        """Make ``prediction_id`` (input ``index``'s ``attempt``-th) durable now; returns once it is."""

    def read(self) -> dict[int, list[str]]:
        """Index to the prediction ids journaled for it, oldest first (a retried input has several)."""

    def clear(self) -> None:
        """Forget what it holds: the manifest just written has every id in it."""

    def reset(self) -> None:
        """Forget everything at once, before a new manifest is written (an earlier batch's ids are not its)."""

    def close(self) -> None:
        """Let go of what it holds open."""

    def remove(self) -> None:
        """Delete it (a finished batch: its manifest has everything); best effort."""


def journal_for(folder: ObjectStoragePath, name: str) -> BatchJournal:
    """The journal beside the manifest ``folder / name``: a file on a local disk, objects elsewhere."""
    if (folder.protocol or "") in LOCAL_PROTOCOLS:
        return FileJournal(f"{folder.path.rstrip('/')}/.{name}.journal")
    return ObjectJournal(folder / f".{name}.journal.d")


class FileJournal:
    """
    Prediction ids appended one JSON line each, beside a local manifest. A last line cut short
    (the process was killed inside that one write) is ignored; any other bad line fails.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.location = path
        self._handle: int | None = None
        self._lock = threading.Lock()

    def append(self, index: int, prediction_id: str, attempt: int = 1) -> None:
        # No attempt written: the lines keep the order the attempts were made in.
        line = f'{{"index":{index},"prediction_id":"{prediction_id}"}}\n'.encode()
        with self._lock:
            if self._handle is None:
                self._handle = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(self._handle, line)

    def read(self) -> dict[int, list[str]]:
        try:
            with open(self.path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise BatchManifestError(f"Cannot read the batch journal {self.path}: {error}.") from error
        complete = data.split(b"\n")[:-1]  # the last part is empty unless the final write was cut
        ids: dict[int, list[str]] = {}
        for number, raw in enumerate(complete, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
                index, prediction_id = record["index"], check_prediction_id(record["prediction_id"])
                if not is_count(index):
                    raise ValueError("index")
            except (ValueError, KeyError, TypeError, InvalidPredictionIdError):
                raise corrupt_manifest(f"line {number} of the journal {self.path}", "is not one of ours") from None
            ids.setdefault(index, []).append(prediction_id)
        return ids

    def clear(self) -> None:
        with self._lock:
            if self._handle is not None:
                os.ftruncate(self._handle, 0)
            elif os.path.exists(self.path):
                os.truncate(self.path, 0)

    def reset(self) -> None:
        self.clear()

    def close(self) -> None:
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            os.close(handle)

    def remove(self) -> None:
        self.close()
        with suppress(OSError):
            os.unlink(self.path)


class ObjectJournal:
    """
    Prediction ids as empty objects named ``<index>.<attempt>.<id>`` in a folder beside a manifest
    in an object store. The attempt orders a retried input's ids; a name that is not one of ours
    fails (a folder marker some tools write is skipped).
    """

    def __init__(self, folder: ObjectStoragePath) -> None:
        self.folder = folder
        self.location = str(folder)
        self._names: list[str] = []  # written since the last clear: deleted by the next
        self._listed = False  # whether a clear has listed the folder yet (the first one does)
        self._lock = threading.Lock()
        self._deleting: ThreadPoolExecutor | None = None

    def append(self, index: int, prediction_id: str, attempt: int = 1) -> None:
        name = f"{index}.{attempt}.{prediction_id}"
        (self.folder / name).write_bytes(b"")
        with self._lock:
            self._names.append(name)

    def _entry_names(self) -> list[str]:
        if not self.folder.exists():
            return []
        own = self.folder.name
        return [name for entry in self.folder.iterdir() if (name := entry.name) and name != own]

    def read(self) -> dict[int, list[str]]:
        try:
            names = self._entry_names()
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise BatchManifestError(f"Cannot list the batch journal {self.location}: {error}.") from error
        records: list[tuple[int, int, str]] = []
        for name in names:
            try:
                index_part, attempt_part, id_part = name.split(".", 2)
                records.append((int(index_part), int(attempt_part), check_prediction_id(id_part)))
            except (ValueError, InvalidPredictionIdError):
                where = f"the journal entry {name[:120]!r} in {self.location}"
                raise corrupt_manifest(where, "is not one of ours") from None
        ids: dict[int, list[str]] = {}
        for index, _, prediction_id in sorted(records):
            ids.setdefault(index, []).append(prediction_id)
        return ids

    def clear(self) -> None:
        """
        Delete its entries in the background, so that the batch's loop does not wait on the store.
        The first clear deletes every entry in the folder (those an earlier try left and this one
        replayed, the manifest just written has them), later ones what this journal wrote since.
        One left behind (a failed delete, a kill) is harmless: ``replay`` skips an id the manifest
        has, and the next try's first clear deletes it.
        """
        with self._lock:
            names, self._names = self._names, []
            listed, self._listed = self._listed, True
        if not listed:
            with suppress(Exception):  # best effort, as every delete here
                names = sorted(set(names) | set(self._entry_names()))
        if not names:
            return
        if self._deleting is None:
            self._deleting = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cometapi-journal")
        self._deleting.submit(_delete_entries, self.folder, names)

    def reset(self) -> None:
        """Delete every entry now (a new manifest: what an earlier batch journaled is not this one's)."""
        with self._lock:
            self._names, self._listed = [], True
        try:
            names = self._entry_names()
        except OSError as error:
            raise BatchManifestError(f"Cannot list the batch journal {self.location}: {error}.") from error
        _delete_entries(self.folder, names, strict=True)

    def close(self) -> None:
        deleting, self._deleting = self._deleting, None
        if deleting is not None:  # bounded: deletes not done by then are left to the next try
            deleting.shutdown(wait=False, cancel_futures=True)

    def remove(self) -> None:
        self.close()
        with suppress(Exception):  # best effort: a leftover entry harms nothing (see ``clear``)
            _delete_entries(self.folder, self._entry_names())


def _delete_entries(folder: ObjectStoragePath, names: Sequence[str], *, strict: bool = False) -> None:
    """
    Delete journal entries: in one bulk request where the store has one (S3 takes a thousand keys
    a request), else one by one. Best effort unless ``strict`` (then a failure raises).
    """
    if not names:
        return
    try:
        folder.fs.rm([f"{folder.path.rstrip('/')}/{name}" for name in names])
        return
    except Exception:  # no bulk delete here (or it failed): one at a time
        pass
    for name in names:
        try:
            (folder / name).unlink(missing_ok=True)
        except Exception as error:
            if strict:
                raise BatchManifestError(f"Cannot empty the batch journal {folder}: {error}.") from error


def replay(entries: Sequence[ManifestEntry], journaled: Mapping[int, Sequence[str]]) -> int:
    """
    Give the entries the ids the journal has and the manifest lacks; how many were given.

    The journal holds only ids created since the manifest was last written (each checkpoint
    empties it), so an id the entry does not know is newer than the one it has: an input
    created again (``retry_failed``) keeps its earlier id in ``previous_ids``.
    """
    given = 0
    for index, prediction_ids in journaled.items():
        if not 0 <= index < len(entries):
            continue
        entry = entries[index]
        for prediction_id in prediction_ids:
            if prediction_id == entry.prediction_id or prediction_id in entry.previous_ids:
                continue  # written to the manifest before the journal was emptied
            if entry.prediction_id is not None:
                entry.previous_ids.append(entry.prediction_id)
            entry.prediction_id, entry.status, entry.attempts = prediction_id, "starting", entry.attempts + 1
            entry.error, entry.outputs, entry.stored = None, [], None
            given += 1
    return given
