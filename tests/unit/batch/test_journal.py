"""The journal beside an object-store manifest: an id durable as soon as its create answers."""

from __future__ import annotations

import time

import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_cometapi.batch.journal import FileJournal, ObjectJournal, journal_for
from airflow_provider_cometapi.exceptions import BatchManifestError

ROOT = "memory://cometapi-journal-test"


@pytest.fixture
def memory_store(monkeypatch):
    """An in-memory object store (Airflow registers none for memory://), emptied for each test."""
    from airflow.sdk.io import store
    from fsspec.implementations.memory import MemoryFileSystem

    filesystem = MemoryFileSystem()
    monkeypatch.setattr(MemoryFileSystem, "store", {})  # class-level state: one store per test
    monkeypatch.setattr(MemoryFileSystem, "pseudo_dirs", [""])
    monkeypatch.setitem(store._STORE_CACHE, "memory", store.ObjectStore("memory", None, fs=filesystem))
    return ObjectStoragePath(f"{ROOT}/run")


def wait_until_empty(folder, seconds=5.0):
    end = time.monotonic() + seconds
    while folder.exists() and list(folder.iterdir()) and time.monotonic() < end:
        time.sleep(0.02)


def test_a_local_manifest_gets_a_file_an_object_store_objects(tmp_path, memory_store):
    assert isinstance(journal_for(ObjectStoragePath(f"file://{tmp_path}"), "m.jsonl"), FileJournal)
    journal = journal_for(memory_store, "m.jsonl")
    assert isinstance(journal, ObjectJournal)
    # Beside the manifest (Airflow 3.1 writes memory:// URIs with a third slash).
    assert journal.location.startswith("memory://") and journal.location.endswith("/run/.m.jsonl.journal.d")


def test_ids_read_back_in_the_order_of_their_attempts(memory_store):
    journal = journal_for(memory_store, "m.jsonl")
    journal.append(0, "zeta", 1)
    journal.append(2, "third", 1)
    journal.append(0, "alpha", 2)  # input 0 created again (retry_failed): its second attempt
    # A later try reads them with a journal of its own, from the listing alone, by attempt (not by name).
    assert journal_for(memory_store, "m.jsonl").read() == {0: ["zeta", "alpha"], 2: ["third"]}


def test_the_first_clear_deletes_every_entry_later_ones_what_it_wrote(memory_store):
    earlier = journal_for(memory_store, "m.jsonl")
    earlier.append(0, "first")
    earlier.append(1, "second")
    later = journal_for(memory_store, "m.jsonl")  # the next try: replays them, writes its own
    assert later.read() == {0: ["first"], 1: ["second"]}
    later.append(2, "third")
    later.clear()  # the manifest it just wrote has all three
    later.close()
    wait_until_empty(ObjectStoragePath(later.location))
    assert journal_for(memory_store, "m.jsonl").read() == {}


def test_reset_empties_it_at_once(memory_store):
    old_batch = journal_for(memory_store, "m.jsonl")
    old_batch.append(0, "of-another-batch")
    journal_for(memory_store, "m.jsonl").reset()  # a new manifest: nothing of the old one may be replayed
    assert journal_for(memory_store, "m.jsonl").read() == {}


def test_a_folder_marker_is_not_an_entry(memory_store):
    folder = memory_store / ".m.jsonl.journal.d"
    folder.mkdir(parents=True, exist_ok=True)
    journal = journal_for(memory_store, "m.jsonl")
    journal.append(3, "one")
    assert journal.read() == {3: ["one"]}


def test_remove_leaves_nothing(memory_store):
    journal = journal_for(memory_store, "m.jsonl")
    journal.append(0, "first")
    journal.remove()
    assert journal_for(memory_store, "m.jsonl").read() == {}


def test_an_entry_that_is_not_ours_fails_by_name(memory_store):
    (memory_store / ".m.jsonl.journal.d" / "notes.txt").write_bytes(b"")
    with pytest.raises(BatchManifestError, match="journal entry 'notes.txt'"):
        journal_for(memory_store, "m.jsonl").read()
