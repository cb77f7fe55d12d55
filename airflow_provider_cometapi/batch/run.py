"""
One batch on the worker: its inputs, its manifest, and its one loop.

``BatchRun`` is what ``CreatePredictionBatchOperator`` drives, as fresh after every deferral
(it is rebuilt from the manifest, since a resumed task is a new object). Its loop,
``create_and_store``, never stops creating to wait or to store: while inputs are pending and
slots are free it sends creates at the pace's rate, a few at once on a small pool (a create
waits on the gateway for tens to hundreds of milliseconds, so one at a time could not keep
pace). Meanwhile a ``BackgroundPoller`` polls the running predictions on a thread of its own,
and another small pool asks CometAPI again about each one that ended (fresh output URLs) and
stores its outputs (``storage.store_prediction``, the storage operator's own code path). Only
this thread touches the entries: the pools and the poller hand results back. Failed inputs get
their new predictions (``retry_failed``). Each id is in the journal (``batch.journal``) as soon as
its create answers, and in the manifest at the next checkpoint; whatever ends the loop, the
creates in flight are waited for and recorded first. The hook does every request.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_cometapi.batch import manifest as manifest_lines
from airflow_provider_cometapi.batch.inputs import BatchInput
from airflow_provider_cometapi.batch.journal import journal_for, replay
from airflow_provider_cometapi.batch.manifest import PENDING, SKIPPED, UNCERTAIN, ManifestEntry, shown_input
from airflow_provider_cometapi.batch.pacing import CreatePacer
from airflow_provider_cometapi.batch.poller import BackgroundPoller
from airflow_provider_cometapi.batch.watch import PROGRESS_SECONDS, Progress
from airflow_provider_cometapi.cost import (
    Budget,
    BudgetCounter,
    Spend,
    format_amount,
    image_count,
    planned_images,
    total_cost,
)
from airflow_provider_cometapi.exceptions import (
    BatchFailedError,
    BudgetExceededError,
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

# The manifest is rewritten at most this often while the batch runs (and always before a wait
# and at the end). Every id is in the journal the moment its create answers, so the manifest
# only spares a resume asking again about what ended.
CHECKPOINT_SECONDS = 5.0
# Creates in a row that fail without an id (5xx, timeouts, resets, refused) before the batch stops.
MAX_CREATE_FAILURES = 3
CANCEL_CONCURRENCY = 16
# Creates sent at once. The pace still decides when each one goes out; this only hides the
# gateway's latency (at 100 ms a create, one at a time tops out at 600 a minute).
CREATE_CONCURRENCY = 8
# How long a loop that is ending waits for the creates in flight before it calls them uncertain.
CREATE_SETTLE_SECONDS = 30.0
# Predictions asked about and stored at once: each is mostly waiting on the network.
STORE_CONCURRENCY = 8
_DATA_URI_PREVIEW = 48

LoopEnd = Literal["ended", "idle", "failed", "timeout", "broken"]
"""Why ``create_and_store`` returned: every input ended; nothing can be created now and only
waiting is left (``defer_when_idle``); the failure policy is exceeded; the deadline passed;
polling kept failing (``poll_error``)."""


class BatchRun:
    """
    :param entries: the manifest's entries, one per input, in order.
    :param inputs: the checked inputs, in the same order (what a create sends).
    :param directory: where outputs are stored, or ``None`` (the manifest keeps the output URLs).
    :param poll_interval: seconds between two polls of one running prediction.
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
        poll_interval: float = 5.0,
        budget: Budget | None = None,
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
        self.poll_interval = poll_interval
        self._by_id = {entry.prediction_id: entry for entry in entries if entry.prediction_id}
        self._checkpointed = 0.0
        self._dirty = False
        self._logged = time.monotonic()
        self.created = 0
        self.journal = journal_for(manifest_folder, manifest_name)
        self._journal_failed = False
        # Create threads still running, also those the loop stopped waiting for (settling is bounded).
        self._sending = 0
        self._sending_lock = threading.Lock()
        self._lines = manifest_lines.RenderedLines()
        # Running counts, kept by ``_update`` (every change of an entry goes through it): no
        # decision before a create scans the entries.
        self.in_flight = sum(1 for entry in entries if entry.is_running)
        self._failed_for_good = sum(1 for entry in entries if self._fails_for_good(entry))
        for entry in entries:
            if entry.status == SKIPPED:  # the budget left it uncreated: checked against it again
                entry.status, entry.error = PENDING, None
        self._to_create: deque[ManifestEntry] = deque(entry for entry in entries if entry.status == PENDING)
        self._to_renew: list[ManifestEntry] = [entry for entry in entries if self._may_renew(entry)]
        self._create_failures = 0
        # The overlap: the create pool sends creates, the poller finds what ended, the store pool
        # stores it; this thread records all of it.
        self._news = threading.Event()
        self._create_pool: ThreadPoolExecutor | None = None
        self._creating: dict[Future[Created], ManifestEntry] = {}
        self._created: deque[Future[Created]] = deque()
        self._poller: BackgroundPoller | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._storing: dict[Future[Settled], ManifestEntry] = {}
        self._storing_ids: set[str] = set()
        self._stored: deque[Future[Settled]] = deque()
        self.poll_error: str | None = None
        self.prices = hook.settings.prices
        # The budget's count: what the manifest says every prediction so far made, those not
        # ended yet (or whose end is unknown) at their planned images, reserved by index.
        self._reserved: dict[int, int] = {}
        self._counted: set[int] = set()
        self.counter: BudgetCounter | None = None
        if budget:
            self.counter = BudgetCounter(budget, self.prices, model, spent=self._spent_so_far())

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
        journal = journal_for(path.parent, path.name)
        if entries is None:
            # A new manifest starts a new journal: one an earlier batch left (its manifest deleted
            # to start over) holds ids of other inputs, which a resume must never take for these.
            journal.reset()
            return cls.fresh_entries(model, inputs), False
        manifest_lines.check_matches(entries, cls.fingerprints(model, inputs), uri=str(path))
        if replayed := replay(entries, journal.read()):
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
        """
        Rewrite the manifest (atomically) if it changed, at most every ``CHECKPOINT_SECONDS``
        unless forced.
        """
        if not force and (not self._dirty or time.monotonic() - self._checkpointed < CHECKPOINT_SECONDS):
            return
        store_file(self.manifest_folder, self.manifest_name, manifest_lines.render_manifest(self.entries, self._lines))
        if not self._creating and not self._sending:
            # Every id it held is in the manifest now. Not while creates are out, nor while a create
            # the loop stopped waiting for may still answer: its id may be in the journal only.
            self.journal.clear()
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
        self._stop_background()
        if finished:
            self.journal.remove()
        else:
            self.journal.close()

    def remove_stale_manifest_copies(self) -> None:
        """Temporary copies a killed checkpoint left (``.<name>.partial-<hex>``); best effort."""
        prefix = f".{self.manifest_name}.partial"
        with suppress(OSError):
            for entry in self.manifest_folder.iterdir():
                if entry.name.startswith(prefix):
                    entry.unlink()

    # --- State ---------------------------------------------------------------------------

    def _update(self, entry: ManifestEntry, **changes: Any) -> None:
        """Change ``entry`` and keep the running counts; the one way an entry changes."""
        was_running, was_failed = entry.is_running, self._fails_for_good(entry)
        for name, value in changes.items():
            setattr(entry, name, value)
        self.in_flight += entry.is_running - was_running
        self._failed_for_good += self._fails_for_good(entry) - was_failed
        if self._may_renew(entry):
            self._to_renew.append(entry)
        self._dirty = True

    def _fails_for_good(self, entry: ManifestEntry) -> bool:
        return entry.unsuccessful and not self.policy.may_retry(entry)

    def _may_renew(self, entry: ManifestEntry) -> bool:
        return entry.unsuccessful and self.policy.may_retry(entry)

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
        return self._failed_for_good

    def policy_exceeded(self) -> bool:
        return self.policy.exceeded(self._failed_for_good, len(self.entries))

    def log_progress(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._logged >= PROGRESS_SECONDS:
            self._logged = now
            self.log.info("%s.", _line(self.counts()))

    def _spent_so_far(self) -> Spend:
        """What the manifest says the batch made, earlier tries' too; reserves what may still come."""
        images = 0
        for entry in self.entries:
            images += entry.images or 0
            unknown_end = entry.is_final and entry.prediction_id is not None and entry.images is None
            if entry.is_running or entry.status == UNCERTAIN or unknown_end:
                self._reserved[entry.index] = planned_images(self.inputs[entry.index].input)
        images += sum(self._reserved.values())
        return Spend.of(images, self.prices.cost(self.model, images))

    def _over_budget(self, entry: ManifestEntry) -> str | None:
        """Which limit creating ``entry`` would pass, or ``None`` (no budget, or it fits)."""
        if self.counter is None:
            return None
        return self.counter.exceeding(planned_images(self.inputs[entry.index].input))

    def _skip(self, entry: ManifestEntry, why: str) -> None:
        self._to_create.popleft()
        planned = planned_images(self.inputs[entry.index].input)
        self._update(
            entry,
            status=SKIPPED,
            error=f"Not created: the batch's budget stopped it (it may make {planned} image"
            f"{'' if planned == 1 else 's'}, and {why}).",
        )
        self.log.warning("Input %d not created: the budget stops it (%s).", entry.index, why)

    def _reserve(self, entry: ManifestEntry) -> None:
        if self.counter is not None:
            planned = planned_images(self.inputs[entry.index].input)
            self.counter.spent += self.counter.planned(planned)
            self._reserved[entry.index] = planned

    def _release(self, entry: ManifestEntry) -> None:
        """The create surely made nothing: its reservation is taken back."""
        planned = self._reserved.pop(entry.index, None)
        if self.counter is not None and planned is not None:
            self.counter.release(planned)

    def _made(self, entry: ManifestEntry, images: int) -> None:
        """``entry``'s prediction ended having made ``images``: its line's count and cost, and the budget's."""
        planned = self._reserved.pop(entry.index, None)
        if entry.index in self._counted:  # a succeeded one stored again: counted when it first ended
            self._counted.discard(entry.index)
            return
        total = (entry.images or 0) + images
        entry.images, entry.cost = total, self.prices.cost(self.model, total)
        if self.counter is not None:
            self.counter.spent = self.counter.spent - self.counter.planned(planned or 0) + self.counter.planned(images)

    def _next_to_create(self) -> ManifestEntry | None:
        """The first input still waiting for a prediction (the queue drops what no longer waits)."""
        while self._to_create and self._to_create[0].status != PENDING:
            self._to_create.popleft()
        return self._to_create[0] if self._to_create else None

    # --- The loop ------------------------------------------------------------------------

    def create_and_store(self, ended: Mapping[str, Prediction | str], *, defer_when_idle: bool) -> LoopEnd:
        """
        Create, and record and store what ends, until the batch ends or must stop.

        ``ended`` are predictions already known to have ended (a trigger's event, or succeeded
        ones a resumed manifest has not stored yet): they are stored first, concurrently with
        the creates. While an input is pending and fewer than ``max_in_flight`` are unfinished,
        the next create goes out as soon as the pace allows; in between, and whenever nothing
        can be created, the loop records what the store pool finished and hands it what the
        poller saw end. With ``defer_when_idle`` it returns ``idle`` once nothing can be created
        (every input created, or every slot full) and nothing is being stored, so the caller
        waits deferred with no worker slot held; else it waits here, polling on.
        """
        self._store(ended)
        try:
            while True:
                self._record_created()
                self._record_stored()
                if self._poller is not None:
                    self._store(self._poller.take_ended())
                    if self._poller.error is not None:
                        self.poll_error = self._poller.error
                        return self._end_loop("broken")
                if self.policy_exceeded():
                    return self._end_loop("failed")
                if self.deadline_passed():
                    return self._end_loop("timeout")
                self.renew_failed()
                if self.in_flight > len(self._storing) and self._poller is None:
                    self._start_poller()
                entry = self._next_to_create()
                unfinished = self.in_flight + len(self._creating)
                if entry is not None and unfinished < self.max_in_flight and len(self._creating) < CREATE_CONCURRENCY:
                    over = self._over_budget(entry)
                    if over is None:
                        delay = self.pacer.delay()
                        if delay <= 0:
                            self._create_next(entry)
                        else:
                            self.checkpoint()
                            self._await_news(min(delay, max(0.0, self.deadline - time.time())))
                        continue
                    if unfinished == 0 and not self._storing:
                        self._skip(entry, over)  # nothing in flight can leave room for it any more
                        continue
                    # else: what is in flight may make less than it reserved; waited for below
                busy = bool(self._storing or self._creating)
                if entry is None and self.in_flight == 0 and not busy:
                    return "ended"
                if defer_when_idle and not busy and self.in_flight > 0:
                    if self._stop_poller():
                        continue  # it saw more end on its way out: store them, maybe create more
                    return "idle"
                self.checkpoint()
                self.log_progress()
                self._await_news(min(self.poll_interval, PROGRESS_SECONDS, max(0.0, self.deadline - time.time())))
        finally:
            self._stop_background()

    def _create_next(self, entry: ManifestEntry) -> None:
        """Send ``entry``'s create on the create pool; ``_record_created`` takes its answer."""
        self.pacer.took()
        self._reserve(entry)
        self._to_create.popleft()
        if self._create_pool is None:
            self.hook.get_conn()  # the session made here, not raced for by the pool's threads
            self._create_pool = ThreadPoolExecutor(max_workers=CREATE_CONCURRENCY, thread_name_prefix="cometapi-create")
        future = self._create_pool.submit(self._send_create, entry.index, entry.attempts + 1)
        self._creating[future] = entry
        future.add_done_callback(self._created_one)

    def _send_create(self, index: int, attempt: int) -> Created:
        """On a create thread: one create, its id journaled the moment it answers. Never touches entries."""
        with self._sending_lock:
            self._sending += 1
        try:
            return self._create_and_journal(index, attempt)
        finally:
            with self._sending_lock:
                self._sending -= 1

    def _create_and_journal(self, index: int, attempt: int) -> Created:
        try:
            prediction = self.hook.create_prediction(self.model, self.inputs[index].input)
        except CometAPIError as error:
            return Created(None, error)
        try:
            self.journal.append(index, prediction.id, attempt)  # first: durable before anything else happens
        except Exception as error:  # the id is still recorded, at the next checkpoint
            if not self._journal_failed:  # once: a store that refuses refuses every create
                self._journal_failed = True
                self.log.warning(
                    "Could not journal prediction %s (input %d) in %s: %s. It is recorded at the next "
                    "manifest checkpoint, as every id the journal refuses (not logged again); a worker "
                    "killed before then may create it again.",
                    prediction.id,
                    index,
                    self.journal.location,
                    error,
                )
        return Created(prediction, None)

    def _created_one(self, future: Future[Created]) -> None:
        self._created.append(future)
        self._news.set()

    def _record_created(self, *, settling: bool = False) -> None:
        """
        Record the creates that answered, on this thread. While settling (the loop is ending) an
        error that would stop the batch is not raised again and nothing new is watched.
        """
        while self._created:
            future = self._created.popleft()
            entry = self._creating.pop(future, None)
            if entry is None or future.cancelled():
                continue
            try:
                created = future.result()
            except Exception as error:  # a bug after the request went out: the create may exist
                self._end(
                    entry,
                    UNCERTAIN,
                    f"The create failed unexpectedly ({type(error).__name__}: {str(error)[:200]}); it may have "
                    "reached CometAPI, so it is not sent again.",
                )
                if not settling:
                    raise
                continue
            except BaseException:  # an interrupt on the create's thread: the input stays pending
                self._release(entry)
                self._to_create.appendleft(entry)
                if not settling:
                    raise
                continue
            try:
                self._after_create(entry, created, watch=not settling)
            except CometAPIError:
                if not settling:
                    raise

    def _after_create(self, entry: ManifestEntry, created: Created, *, watch: bool = True) -> None:
        outcome = self._create(entry, created)
        if outcome in ("throttled", "rejected") or (outcome == "failed" and entry.status == PENDING):
            self._release(entry)  # nothing was created
        if outcome == "throttled":
            self._to_create.appendleft(entry)  # first in line again; the pace has slowed
            return
        if outcome == "failed":
            self._create_failures += 1
            if entry.status == PENDING:
                self._to_create.append(entry)  # refused: nothing was created, tried again later
            if self._create_failures >= MAX_CREATE_FAILURES:
                raise self._last_create_error
        else:
            self._create_failures = 0
        if watch and entry.is_running and entry.prediction_id:
            self._watch(entry.prediction_id)
        self.checkpoint()
        self.log_progress()

    def _settle_creates(self) -> None:
        """
        The loop is ending: wait (bounded) for the creates in flight and record their ids, so a
        prediction that exists is never forgotten. One still unanswered is uncertain: not sent again.
        """
        if self._creating:
            wait(list(self._creating), timeout=CREATE_SETTLE_SECONDS)
            # Every create that answered, whether or not its callback has handed it over yet
            # (``wait`` returns before the callbacks run); one handed over twice is skipped.
            self._created = deque(future for future in self._creating if future.done())
            self._record_created(settling=True)
        for future, entry in list(self._creating.items()):
            if not future.done():
                self._end(
                    entry,
                    UNCERTAIN,
                    f"The create was sent but did not answer within {CREATE_SETTLE_SECONDS:g}s while the batch "
                    "stopped, so it is not sent again.",
                )
        self._creating.clear()
        pool, self._create_pool = self._create_pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _await_news(self, timeout: float) -> None:
        """Sleep until a store finishes or the poller sees an end, at most ``timeout`` seconds."""
        self._news.wait(timeout)
        self._news.clear()  # before looking: whatever arrives later wakes the next wait

    def _end_loop(self, why: LoopEnd) -> LoopEnd:
        """The stores in flight are waited for (bounded) and recorded, so the manifest has them."""
        if self._storing:
            wait(list(self._storing), timeout=CANCEL_TIMEOUT)
            self._record_stored()
        return why

    # --- The poller and the store pool ---------------------------------------------------

    def _start_poller(self) -> None:
        ids = [entry.prediction_id for entry in self.running() if entry.prediction_id not in self._storing_ids]
        self._poller = BackgroundPoller(
            self._async_hook,
            conn_id=self.hook.cometapi_conn_id,
            poll_interval=self.poll_interval,
            deadline=self.deadline,
            log=self.log,
            news=self._news,
        ).start([prediction_id for prediction_id in ids if prediction_id])

    def _async_hook(self, conn_id: str) -> CometAPIHook:
        """The poller's hook, given the connection this thread read: no lookup from the poller's thread."""
        hook = type(self.hook)(conn_id)
        hook._settings = self.hook.settings
        return hook

    def _watch(self, prediction_id: str) -> None:
        if self._poller is None:
            self._start_poller()  # it takes every running id, this one with them
        else:
            self._poller.watch(prediction_id)

    def _stop_poller(self) -> bool:
        """Stop polling; store what it saw end on the way out. Whether there was any."""
        poller, self._poller = self._poller, None
        if poller is None:
            return False
        ended = poller.stop()
        self._store(ended)
        return bool(ended)

    def _stop_background(self) -> None:
        self._settle_creates()
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.stop()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        self._storing.clear()
        self._storing_ids.clear()
        self._stored.clear()

    def _store(self, ended: Mapping[str, Prediction | str]) -> None:
        """
        Hand the predictions that ended to the store pool (ids of earlier attempts, or recorded,
        skipped). Each is the poller's final answer, stored from as it is, or a status (an
        event's), for which the pool asks again.
        """
        for prediction_id, answer in ended.items():
            entry = self._by_id.get(prediction_id)
            if entry is None or entry.is_final or entry.prediction_id != prediction_id:
                continue
            if prediction_id in self._storing_ids:
                continue
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=STORE_CONCURRENCY, thread_name_prefix="cometapi-store")
            future = self._pool.submit(self._settle, prediction_id, answer if isinstance(answer, Prediction) else None)
            self._storing[future] = entry
            self._storing_ids.add(prediction_id)
            future.add_done_callback(self._stored_one)

    def _stored_one(self, future: Future[Settled]) -> None:
        """On a pool thread: hand the result over and wake the loop."""
        self._stored.append(future)
        self._news.set()

    def _record_stored(self) -> None:
        """Record the stores that finished, on this thread; one still running is polled again."""
        while self._stored:
            future = self._stored.popleft()
            entry = self._storing.pop(future, None)
            if entry is None or future.cancelled():
                continue
            self._storing_ids.discard(entry.prediction_id or "")
            self._apply(entry, future.result())  # DestinationNotWritableError: the batch stops
            if entry.is_running and entry.prediction_id:
                self._watch(entry.prediction_id)  # not known now, or not ended after all
            self.checkpoint()
            self.log_progress()

    def record_finished(self, finished: Mapping[str, str]) -> None:
        """Ask CometAPI again about each prediction that ended, and record (and store) it; returns when done."""
        self._store(finished)
        try:
            while self._storing:
                wait(list(self._storing))
                self._record_stored()
        finally:
            self._stop_background()

    def unstored(self) -> dict[str, Prediction | str]:
        """The succeeded predictions whose outputs are not stored yet (a resumed manifest's), to store."""
        if self.directory is None:
            return {}
        unstored = [entry for entry in self.entries if entry.succeeded and entry.stored is None and entry.prediction_id]
        for entry in unstored:
            self._update(entry, status="processing")  # recorded again from a fresh answer
            if entry.images is not None:
                self._counted.add(entry.index)  # its images are in the line already
        return {entry.prediction_id or "": "succeeded" for entry in unstored}

    # --- One prediction ------------------------------------------------------------------

    def record(self, entry: ManifestEntry, prediction: Prediction) -> None:
        """``prediction``'s state into ``entry``; a succeeded one is stored first when there is a destination."""
        self._apply(entry, self._outcome(prediction))

    def _settle(self, prediction_id: str, answer: Prediction | None = None) -> Settled:
        """
        On a pool thread: the prediction stored if it succeeded, from ``answer`` (a poll's,
        seconds old) or else asked for again. Never touches entries.
        """
        if answer is not None and answer.is_terminal:
            return self._outcome(answer)
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
        settled = self._stored_outcome(prediction)
        ended = prediction.raw.get("completed_at")
        if isinstance(ended, str) and len(ended) <= manifest_lines.MAX_TIME_CHARS:
            settled = replace(settled, completed_at=ended)  # when its output URLs start to expire
        return settled

    def _stored_outcome(self, prediction: Prediction) -> Settled:
        images = image_count(prediction)
        if not prediction.succeeded:
            error = prediction.error or f"the prediction ended {prediction.status}"
            return Settled(prediction.status, error, images=images)
        if self.directory is None:
            return Settled("succeeded", None, outputs=[_preview(url) for url in prediction.output], images=images)
        try:
            stored = store_prediction(
                prediction, self.directory, self.hook.stream_output, remove_partials=False, prices=self.prices
            )
        except DestinationNotWritableError:
            raise
        except CometAPIError as error:
            return Settled("failed", f"The prediction succeeded but storing its outputs failed: {error}", images=images)
        return Settled("succeeded", None, stored=stored.uris, images=images)

    def _apply(self, entry: ManifestEntry, settled: Settled) -> None:
        if settled.status is None:
            return  # not known now: waited for again
        if settled.final:
            if settled.images is not None:
                self._made(entry, settled.images)
            self._update(
                entry,
                status=settled.status,
                error=settled.error,
                outputs=settled.outputs,
                stored=settled.stored,
                completed_at=settled.completed_at,
            )
        else:
            self._update(entry, status=settled.status)

    def _end(self, entry: ManifestEntry, status: str, error: str | None) -> None:
        self._update(entry, status=status, error=error)

    def renew_failed(self) -> int:
        """Make the failed inputs that may be retried pending again (their old id kept); how many."""
        renewed = 0
        candidates, self._to_renew = self._to_renew, []
        for entry in candidates:
            if not self._may_renew(entry) or entry.prediction_id is None:
                continue  # renewed already (listed twice), or changed since
            self.log.info(
                "Input %d: prediction %s ended %s; creating attempt %d of %d.",
                entry.index,
                entry.prediction_id,
                entry.status,
                entry.attempts + 1,
                1 + self.policy.retry_failed,
            )
            self._update(
                entry,
                previous_ids=[*entry.previous_ids, entry.prediction_id],
                prediction_id=None,
                status=PENDING,
                outputs=[],
                stored=None,
            )
            self._to_create.append(entry)
            renewed += 1
        return renewed

    _last_create_error: CometAPIError

    def _create(self, entry: ManifestEntry, created: Created) -> str:
        """One create's answer: ``created``, ``rejected`` (422), ``throttled`` (try again later) or ``failed``."""
        prediction, error = created.prediction, created.error
        if prediction is not None:
            self._update(entry, prediction_id=prediction.id, attempts=entry.attempts + 1, error=None)
            self._by_id[prediction.id] = entry
            self.created += 1
            self.record(entry, prediction)
            return "created"
        if isinstance(error, RateLimitedError):
            self.pacer.throttled(error)
            self.log.warning("Creates are throttled: slowing to %.0f a minute. %s", self.pacer.per_minute(), error)
            return "throttled"
        if isinstance(error, InvalidInputError):
            self._end(entry, "failed", f"CometAPI rejected the input: {error}")
            entry.images = entry.images or 0  # nothing was created: it cost nothing
            entry.cost = self.prices.cost(self.model, entry.images)
            return "rejected"
        assert error is not None  # a create answers with a prediction or an error
        if not (error.transient or error.nothing_created):
            raise error  # a bad key, no credit, an unknown model: every other create would fail too
        self._last_create_error = error
        if error.nothing_created:
            return "failed"  # refused: nothing was created, the input stays pending
        self._end(entry, UNCERTAIN, f"The create may have reached CometAPI, so it is not sent again: {error}")
        return "failed"

    # --- Ending --------------------------------------------------------------------------

    def cancel_unfinished(self, reason: str) -> int:
        """
        Cancel every unfinished prediction, concurrently and within about ``CANCEL_TIMEOUT``
        seconds; record it in the entries. Pending inputs are left uncreated. Returns how many
        cancels CometAPI accepted.
        """
        self._stop_background()
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
                if isinstance(answer, Prediction):
                    accepted += 1
                    status = answer.status if answer.is_terminal else "canceled"
                    if answer.is_terminal:
                        self._made(entry, image_count(answer))
                    self._update(entry, cancelled=True, status=status, error=f"Cancelled: {reason}")
                else:
                    error = f"Cancel requested ({reason}) but not confirmed: it may run to its end."
                    self._update(entry, cancelled=True, error=error)
        for entry in self.pending():
            self._update(entry, error=f"Not created: {reason}")
        self._dirty = True
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
            "skipped": tally["skipped"],
            "images": sum(entry.images or 0 for entry in self.entries),
            "cost": self.total_cost(),
            "currency": self.prices.currency,
        }

    def total_cost(self) -> float | None:
        """What the ended lines cost; ``None`` if one's cost is unknown (no price, an end not known)."""
        return total_cost(
            entry.cost if entry.images is not None else None
            for entry in self.entries
            if entry.is_final or entry.images is not None  # ended, or an earlier attempt did
        )

    def budget_failure(self) -> BudgetExceededError:
        """The batch ended with inputs the budget left uncreated."""
        skipped = [entry for entry in self.entries if entry.status == SKIPPED]
        counter = self.counter
        spent = counter.spent if counter is not None else Spend()
        limits = ""
        if counter is not None:
            parts = []
            if counter.budget.max_images is not None:
                parts.append(f"max_images={counter.budget.max_images}")
            if counter.budget.max_cost is not None:
                parts.append(f"max_cost={format_amount(counter.budget.max_cost)} {self.prices.currency}")
            limits = " and ".join(parts)
        return BudgetExceededError(
            f"The batch's budget ({limits}) stopped it: {len(skipped):,} of {len(self.entries):,} inputs were not "
            f"created (status skipped in the manifest {self.manifest_uri}, for example input {skipped[0].index}: "
            f"{skipped[0].error}). Every prediction it started was finished and stored first; in all it made "
            f"{spent.described(self.prices.currency)}. Raise max_images or max_cost and clear the task to create "
            "the skipped inputs (what was made is not made again).",
            images=sum(planned_images(self.inputs[entry.index].input) for entry in skipped),
            spent=spent,
        )

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
class Created:
    """One create's answer, as its thread hands it over: the prediction, or why there is none."""

    prediction: Prediction | None
    error: CometAPIError | None


@dataclass(frozen=True)
class Settled:
    """What became of one prediction: its status (``None``: unknown for now), and for an end, the rest."""

    status: str | None
    error: str | None
    final: bool = True
    outputs: list[str] = field(default_factory=list)
    stored: list[str] | None = None
    images: int | None = None
    completed_at: str | None = None


def _line(tally: Mapping[str, int]) -> str:
    done = tally["succeeded"] + tally["failed"]
    return f"{done:,} of {tally['total']:,} done, {tally['failed']:,} failed, {tally['running']:,} in flight"


def _preview(url: str) -> str:
    if url.startswith("data:") and len(url) > _DATA_URI_PREVIEW:
        return f"{url[:_DATA_URI_PREVIEW]}...({len(url)} chars)"
    return url
