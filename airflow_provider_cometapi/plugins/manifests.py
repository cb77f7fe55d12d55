"""
The batch manifests the gallery has read, kept so that serving one image does not read and
parse its batch's whole manifest (up to 64 MiB) again.

Every request still finds the manifest's URI in the run's own records and asks the store for the
file's size, modification time and ETag (``files.stamp``); only a manifest with the same URI,
the same stamp, read for the same task instance within ``MAX_AGE`` seconds is reused. So a
rewritten manifest is read again, and the rule that only files a run recorded are served is
unchanged: the cache holds what reading that manifest would give, nothing more.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from airflow_provider_cometapi.plugins import files
from airflow_provider_cometapi.plugins.records import Record, TaskRef, batch_manifest, manifest_records

# A few manifests, and not more records in all than about two full ones (100,000 lines each):
# a larger manifest is read per request, as without the cache.
MAX_MANIFESTS = 4
MAX_RECORDS = 250_000
# Also a backstop for stores whose stat gives neither modification time nor ETag.
MAX_AGE = 300.0

_Key = tuple[str, TaskRef, tuple[Any, ...]]


class ManifestCache:
    """A reader (``records.Reader``) of batch manifests that keeps the last few it parsed."""

    def __init__(
        self,
        stamp: Callable[[str], tuple[Any, ...]] = files.stamp,
        *,
        max_manifests: int = MAX_MANIFESTS,
        max_records: int = MAX_RECORDS,
        max_age: float = MAX_AGE,
    ) -> None:
        self._stamp = stamp
        self.max_manifests, self.max_records, self.max_age = max_manifests, max_records, max_age
        self._entries: OrderedDict[_Key, tuple[float, tuple[Record, ...]]] = OrderedDict()
        self._lock = threading.Lock()  # FastAPI runs sync routes in a thread pool
        self.reads = 0  # manifests read and parsed: what the tests and a benchmark count

    def __call__(self, value: Any, task: TaskRef, open_text: Callable[[str], str]) -> Iterable[Record]:
        if (manifest := batch_manifest(value)) is None:
            return ()
        try:
            key: _Key = (manifest, task, self._stamp(manifest))
        except Exception:  # gone or unreadable: nothing to show, as when reading it fails
            return ()
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and now - entry[0] < self.max_age:
                self._entries.move_to_end(key)
                return entry[1]
        try:
            text = open_text(manifest)
        except Exception:
            return ()
        records = tuple(manifest_records(text, task))
        with self._lock:
            self.reads += 1
            if len(records) <= self.max_records:
                self._entries[key] = (now, records)
                self._evict()
        return records

    def _evict(self) -> None:
        total = sum(len(records) for _, records in self._entries.values())
        while self._entries and (len(self._entries) > self.max_manifests or total > self.max_records):
            _, (_, records) = self._entries.popitem(last=False)
            total -= len(records)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


MANIFESTS = ManifestCache()
