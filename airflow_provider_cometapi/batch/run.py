"""
One batch on the worker: its inputs, its manifest, and the steps between two waits.

``BatchRun`` is what ``CreatePredictionBatchOperator`` drives, as fresh after every deferral
(it is rebuilt from the manifest, since a resumed task is a new object). A step records what
ended (asking CometAPI for each again, for fresh output URLs), stores the outputs of those that
succeeded (``storage.store_prediction``, the storage operator's own code path), gives failed
inputs their new predictions (``retry_failed``), and creates a wave: as many as the free slots
allow, at the pace's rate, each id written to the manifest at the next checkpoint (at most
``CHECKPOINT_SECONDS`` later). The hook does every request.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed, wait
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_cometapi.batch import manifest as manifest_lines
from airflow_provider_cometapi.batch.inputs import BatchInput
from airflow_provider_cometapi.batch.manifest import PENDING, UNCERTAIN, ManifestEntry, shown_input
from airflow_provider_cometapi.batch.pacing import CreatePacer, slots
from airflow_provider_cometapi.batch.watch import PROGRESS_SECONDS, Progress
from airflow_provider_cometapi.exceptions import (
    BatchFailedError,
    CometAPIError,
    DestinationNotWritableError,
    InvalidInputError,
    PredictionNotFoundError,
    RateLimitedError,
)
from airflow_provider_cometapi.models import Prediction
from airflow_provider_cometapi.polling import CANCEL_TIMEOUT
from airflow_provider_cometapi.resume import request_fingerprint
from airflow_provider_cometapi.storage import remove_stale_partials, store_file, store_prediction

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_cometapi.batch.policy import FailurePolicy
    from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
    from airflow_provider_cometapi.retry import LoggerLike

# The manifest is rewritten at most this often while creating or storing (and always before a
# wait and at the end): a worker killed mid-wave loses at most the ids of this many seconds.
CHECKPOINT_SECONDS = 1.0
# Creates in a row that fail without an id (5xx, timeouts, resets, refused) before the batch stops.
MAX_CREATE_FAILURES = 3
CANCEL_CONCURRENCY = 16
# Predictions asked about and stored at once: each is mostly waiting on the network.
STORE_CONCURRENCY = 8
_DATA_URI_PREVIEW = 48


class BatchRun:
    """
    :param entries: the manifest's entries, one per input, in order.
    :param inputs: the checked inputs, in the same order (what a create sends).
    :param directory: where outputs are stored, or ``None`` (the manifest keeps the output URLs).
    """

    def __init__(
        self,
        *,
        hook: CometAPIHook,
        model: str,
        inputs: Sequence[BatchInput],
        entries: list[ManifestEntry],
        manifest_folder: ObjectStoragePath,
        manifest_name: str,
        directory: ObjectStoragePath | None,
        policy: FailurePolicy,
        pacer: CreatePacer,
        max_in_flight: int,
        deadline: float,
        log: LoggerLike,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.hook = hook
        self.model = model
        self.inputs = inputs
        self.entries = entries
        self.manifest_folder = manifest_folder
        self.manifest_name = manifest_name
        self.directory = directory
        self.policy = policy
        self.pacer = pacer
        self.max_in_flight = max_in_flight
        self.deadline = deadline
        self.log = log
        self.sleep = sleep
        self._by_id = {entry.prediction_id: entry for entry in entries if entry.prediction_id}
        self._checkpointed = 0.0
        self._dirty = False
        self._logged = time.monotonic()
        self.created = 0
        self.journal = journal_for(manifest_folder, manifest_name)

    @property
    def manifest_uri(self) -> str:
        return str(self.manifest_folder / self.manifest_name)

    # --- Opening -------------------------------------------------------------------------

    @staticmethod
    def fingerprints(model: str, inputs: Sequence[BatchInput]) -> list[str]:
        return [request_fingerprint(model, item.input) for item in inputs]

    @staticmethod
    def fresh_entries(model: str, inputs: Sequence[BatchInput]) -> list[ManifestEntry]:
        return [
            ManifestEntry(
                index=item.index,
                input=shown_input(item.input),
                fingerprint=request_fingerprint(model, item.input),
                line=item.line,
            )
            for item in inputs
        ]

    @classmethod
    def load_entries(
        cls, path: ObjectStoragePath, model: str, inputs: Sequence[BatchInput], log: LoggerLike
    ) -> tuple[list[ManifestEntry], bool]:
        """The manifest's entries (checked against the inputs), or fresh ones; and whether it existed."""
        entries = manifest_lines.read_manifest(path)
        if entries is None:
            return cls.fresh_entries(model, inputs), False
        manifest_lines.check_matches(entries, cls.fingerprints(model, inputs), uri=str(path))
        journal = journal_for(path.parent, path.name)
        if journal is not None and (replayed := manifest_lines.replay(entries, journal.read())):
            log.info("Took %d prediction ids from the journal that the manifest did not have yet.", replayed)
        tally = manifest_lines.counts(entries)
        log.info(
            "Resuming the batch from its manifest %s: %s, %s pending; no input with a prediction is created again.",
            path,
            _line(tally),
            f"{tally['pending']:,}",
        )
        return entries, True

    # --- The manifest --------------------------------------------------------------------

    def checkpoint(self, *, force: bool = False) -> None:
        """Rewrite the manifest (atomically) if it changed, at most every ``CHECKPOINT_SECONDS`` unless forced."""
        if not force and (not self._dirty or time.monotonic() - self._checkpointed < CHECKPOINT_SECONDS):
            return
        store_file(self.manifest_folder, self.manifest_name, manifest_lines.render_manifest(self.entries))
        if self.journal is not None:
            self.journal.clear()  # every id it held is in the manifest now
        self._checkpointed = time.monotonic()
        self._dirty = False

    def remove_stale_outputs(self) -> None:
        """The temporary files a killed earlier try left for this batch's outputs: one listing for all."""
        if self.directory is None:
            return
        ids = [pid for entry in self.entries for pid in (*entry.previous_ids, entry.prediction_id) if pid]
        removed = remove_stale_partials(self.directory, ids)
        if removed:
            self.log.info("Removed %d temporary files left by an interrupted earlier try.", len(removed))

    def close(self, *, finished: bool = False) -> None:
        """Let go of the journal; a finished batch's manifest has every id, so its journal goes."""
        if self.journal is not None:
            self.journal.close()
            if finished:
                with suppress(OSError):
                    os.unlink(self.journal.path)

    def remove_stale_manifest_copies(self) -> None:
        """Temporary copies a killed checkpoint left (``.<name>.partial-<hex>``); best effort."""
        prefix = f".{self.manifest_name}.partial"
        with suppress(OSError):
            for entry in self.manifest_folder.iterdir():
                if entry.name.startswith(prefix):
                    entry.unlink()

    def _changed(self) -> None:
        self._dirty = True

    # --- State ---------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        return manifest_lines.counts(self.entries)

    def running(self) -> list[ManifestEntry]:
        return [entry for entry in self.entries if entry.is_running]

    def pending(self) -> list[ManifestEntry]:
        return [entry for entry in self.entries if entry.status == PENDING]

    def progress(self) -> Progress:
        tally = self.counts()
        return Progress(tally["total"], tally["succeeded"] + tally["failed"], tally["failed"])

    def deadline_passed(self) -> bool:
        return time.time() >= self.deadline

    def failed_for_good(self) -> int:
        """Unsuccessful inputs that get no new prediction."""
        return sum(1 for entry in self.entries if entry.unsuccessful and not self.policy.may_retry(entry))

    def policy_exceeded(self) -> bool:
        return self.policy.exceeded(self.failed_for_good(), len(self.entries))

    def log_progress(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._logged >= PROGRESS_SECONDS:
            self._logged = now
            self.log.info("%s.", _line(self.counts()))

    # --- One step ------------------------------------------------------------------------

    def record_finished(self, finished: Mapping[str, str]) -> None:
        """
        Ask CometAPI again about each prediction that ended, and record (and store) it.

        ``STORE_CONCURRENCY`` at a time (asking and downloading is waiting on the network); the
        entries are updated here, on the calling thread, as each is done.
        """
        todo = [
            entry
            for prediction_id in finished
            if (entry := self._by_id.get(prediction_id)) is not None and not entry.is_final
        ]  # ids of earlier attempts, or recorded already, are skipped
        if not todo:
            return
        fatal: BaseException | None = None
        with ThreadPoolExecutor(max_workers=min(STORE_CONCURRENCY, len(todo))) as pool:
            futures = {pool.submit(self._settle, entry.prediction_id or ""): entry for entry in todo}
            for future in as_completed(futures):
                entry = futures[future]
                try:
                    self._apply(entry, future.result())
                except DestinationNotWritableError as error:
                    fatal = fatal or error
                    pool.shutdown(wait=False, cancel_futures=True)
                self.checkpoint()
                self.log_progress()
        if fatal is not None:
            raise fatal

    def store_unstored(self) -> None:
        """Store the succeeded predictions whose outputs are not stored yet (a resumed manifest's)."""
        if self.directory is None:
            return
        unstored = [entry for entry in self.entries if entry.succeeded and entry.stored is None and entry.prediction_id]
        for entry in unstored:
            entry.status = "processing"  # recorded again from a fresh answer
        self.record_finished({entry.prediction_id or "": "succeeded" for entry in unstored})

    def record(self, entry: ManifestEntry, prediction: Prediction) -> None:
        """``prediction``'s state into ``entry``; a succeeded one is stored first when there is a destination."""
        self._apply(entry, self._outcome(prediction))

    def _settle(self, prediction_id: str) -> Settled:
        """On a pool thread: the prediction asked for again, and stored if it succeeded. Never touches entries."""
        try:
            prediction = self.hook.get_prediction(prediction_id, deadline=self.deadline + CANCEL_TIMEOUT)
        except PredictionNotFoundError as error:
            return Settled("failed", f"CometAPI no longer knows the prediction: {error}")
        except CometAPIError as error:
            if error.transient:
                self.log.warning("Could not ask about prediction %s (asked again later): %s", prediction_id, error)
                return Settled(None, None)
            return Settled("failed", str(error))
        return self._outcome(prediction)

    def _outcome(self, prediction: Prediction) -> Settled:
        if not prediction.is_terminal:
            return Settled(prediction.status, None, final=False)
        if not prediction.succeeded:
            return Settled(prediction.status, prediction.error or f"the prediction ended {prediction.status}")
        if self.directory is None:
            return Settled("succeeded", None, outputs=[_preview(url) for url in prediction.output])
        try:
            stored = store_prediction(prediction, self.directory, self.hook.stream_output, remove_partials=False)
        except DestinationNotWritableError:
            raise
        except CometAPIError as error:
            return Settled("failed", f"The prediction succeeded but storing its outputs failed: {error}")
        return Settled("succeeded", None, stored=stored.uris)

    def _apply(self, entry: ManifestEntry, settled: Settled) -> None:
        if settled.status is None:
            return  # not known now: waited for again
        entry.status = settled.status
        if settled.final:
            entry.error = settled.error
            entry.outputs = settled.outputs
            entry.stored = settled.stored
        self._changed()

    def _end(self, entry: ManifestEntry, status: str, error: str | None) -> None:
        entry.status, entry.error = status, error
        self._changed()

    def renew_failed(self) -> int:
        """Make the failed inputs that may be retried pending again (their old id kept); how many."""
        renewed = 0
        for entry in self.entries:
            if entry.unsuccessful and self.policy.may_retry(entry) and entry.prediction_id is not None:
                self.log.info(
                    "Input %d: prediction %s ended %s; creating attempt %d of %d.",
                    entry.index,
                    entry.prediction_id,
                    entry.status,
                    entry.attempts + 1,
                    1 + self.policy.retry_failed,
                )
                entry.previous_ids.append(entry.prediction_id)
                entry.prediction_id, entry.status, entry.outputs, entry.stored = None, PENDING, [], None
                renewed += 1
                self._changed()
        return renewed

    def create_wave(self) -> None:
        """
        Create predictions for pending inputs while slots are free, at the pace's rate, until
        the deadline. Stops early when the failure policy is exceeded.
        """
        in_flight = len(self.running())
        failures = 0
        for entry in self.pending():
            if slots(self.max_in_flight, in_flight) == 0 or self.policy_exceeded():
                break
            while True:  # until this input has a prediction, an end, or the batch must stop
                delay = self.pacer.delay()
                if time.time() + delay >= self.deadline:
                    self.checkpoint(force=True)
                    return
                if delay > 0:
                    self.checkpoint()
                    self.sleep(delay)
                self.pacer.took()
                outcome = self._create(entry)
                if outcome == "throttled":
                    continue
                if outcome == "failed":
                    failures += 1
                    if failures >= MAX_CREATE_FAILURES:
                        self.checkpoint(force=True)
                        raise self._last_create_error
                else:
                    failures = 0
                break
            if entry.is_running:
                in_flight += 1
            self.checkpoint()
            self.log_progress()
        self.checkpoint(force=True)

    _last_create_error: CometAPIError

    def _create(self, entry: ManifestEntry) -> str:
        """One create: ``created``, ``rejected`` (422), ``throttled`` (try again later) or ``failed``."""
        try:
            prediction = self.hook.create_prediction(self.model, self.inputs[entry.index].input)
        except RateLimitedError as error:
            self.pacer.throttled(error)
            self.log.warning("Creates are throttled: slowing to %.0f a minute. %s", self.pacer.per_minute(), error)
            return "throttled"
        except InvalidInputError as error:
            self._end(entry, "failed", f"CometAPI rejected the input: {error}")
            return "rejected"
        except CometAPIError as error:
            if not (error.transient or error.nothing_created):
                self.checkpoint(force=True)
                raise  # a bad key, no credit, an unknown model: every other create would fail too
            self._last_create_error = error
            if error.nothing_created:
                return "failed"  # refused: nothing was created, the input stays pending
            self._end(entry, UNCERTAIN, f"The create may have reached CometAPI, so it is not sent again: {error}")
            return "failed"
        if self.journal is not None:
            self.journal.append(entry.index, prediction.id)  # first: durable before anything else happens
        entry.prediction_id, entry.attempts, entry.error = prediction.id, entry.attempts + 1, None
        self._by_id[prediction.id] = entry
        self.created += 1
        self.record(entry, prediction)
        return "created"

    # --- Ending --------------------------------------------------------------------------

    def cancel_unfinished(self, reason: str) -> int:
        """
        Cancel every unfinished prediction, concurrently and within about ``CANCEL_TIMEOUT``
        seconds; record it in the entries. Pending inputs are left uncreated. Returns how many
        cancels CometAPI accepted.
        """
        running = self.running()
        deadline = time.time() + CANCEL_TIMEOUT
        accepted = 0
        if running:
            self.log.info("Cancelling %d unfinished predictions: %s", len(running), reason)
            pool = ThreadPoolExecutor(max_workers=min(CANCEL_CONCURRENCY, len(running)))
            futures = {
                pool.submit(self.hook.cancel_prediction, entry.prediction_id, deadline=deadline): entry
                for entry in running
                if entry.prediction_id
            }
            done, _ = wait(futures, timeout=CANCEL_TIMEOUT + 2)
            pool.shutdown(wait=False, cancel_futures=True)
            for future, entry in futures.items():
                answer = future.result() if future in done and future.exception() is None else None
                entry.cancelled = True
                if isinstance(answer, Prediction):
                    accepted += 1
                    entry.status = answer.status if answer.is_terminal else "canceled"
                    entry.error = f"Cancelled: {reason}"
                else:
                    entry.error = f"Cancel requested ({reason}) but not confirmed: it may run to its end."
        for entry in self.pending():
            entry.error = f"Not created: {reason}"
        self._changed()
        return accepted

    def result(self) -> dict[str, Any]:
        """The task's return value: the manifest's URI and the counts, nothing per input."""
        tally = self.counts()
        stored = sum(len(entry.stored or ()) for entry in self.entries)
        return {
            "manifest": self.manifest_uri,
            "destination": None if self.directory is None else str(self.directory),
            "total": tally["total"],
            "succeeded": tally["succeeded"],
            "failed": tally["failed"],
            "canceled": tally["canceled"],
            "predictions": tally["predictions"],
            "stored_files": stored,
        }

    def failure(self, error: type[BatchFailedError], why: str) -> BatchFailedError:
        tally = self.counts()
        unsuccessful = [entry for entry in self.entries if entry.unsuccessful]
        examples = "; ".join(
            f"input {entry.index}: {entry.status}: {(entry.error or '')[:200]}" for entry in unsuccessful[:3]
        )
        return error(
            f"{why} {_line(tally)}. The manifest {self.manifest_uri} lists every input with its status and error"
            f"{' (for example ' + examples + ')' if examples else ''}.",
            manifest=self.manifest_uri,
            counts=tally,
        )


@dataclass(frozen=True)
class Settled:
    """What became of one prediction: its status (``None``: unknown for now), and for an end, the rest."""

    status: str | None
    error: str | None
    final: bool = True
    outputs: list[str] = field(default_factory=list)
    stored: list[str] | None = None


def journal_for(folder: ObjectStoragePath, name: str) -> manifest_lines.Journal | None:
    """The journal beside a manifest on a local disk; ``None`` on an object store (no appends there)."""
    if (folder.protocol or "") not in ("", "file", "local"):
        return None
    return manifest_lines.Journal(f"{folder.path.rstrip('/')}/.{name}.journal")


def _line(tally: Mapping[str, int]) -> str:
    done = tally["succeeded"] + tally["failed"]
    return f"{done:,} of {tally['total']:,} done, {tally['failed']:,} failed, {tally['running']:,} in flight"


def _preview(url: str) -> str:
    if url.startswith("data:") and len(url) > _DATA_URI_PREVIEW:
        return f"{url[:_DATA_URI_PREVIEW]}...({len(url)} chars)"
    return url
