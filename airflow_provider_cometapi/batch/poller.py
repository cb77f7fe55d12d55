"""
Polling a batch's running predictions on a thread of its own, while the worker creates and stores.

``BackgroundPoller`` runs the batch watch's own round (``watch.poll_round``: every watched id
once, at most ``POLL_CONCURRENCY`` at a time, over one async session) on an event loop in a
daemon thread, one round per ``poll_interval``, so no id is polled more often. The worker hands
it each id as the create answers (``watch``) and takes what ended (``take_ended``); the watch and
its dict live on the poller's loop alone, and only the two small hand-over lists cross threads,
under a lock. ``news`` is set whenever something ended, so the worker's loop can sleep on it.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_provider_cometapi.batch.watch import BatchWatch, poll_round

if TYPE_CHECKING:
    from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
    from airflow_provider_cometapi.models import Prediction
    from airflow_provider_cometapi.retry import LoggerLike

_STOP_SECONDS = 30.0


@dataclass
class _AnsweringWatch(BatchWatch):
    """The batch watch, keeping each final answer: the worker stores from it without asking again."""

    answers: dict[str, Prediction] = field(init=False, default_factory=dict)

    def observe(self, prediction_id: str, prediction: Prediction) -> None:
        super().observe(prediction_id, prediction)
        if prediction.is_terminal:
            self.answers[prediction_id] = prediction


class BackgroundPoller:
    """
    :param make_hook: builds the async hook, on the poller's loop (its session belongs there).
    :param news: set when predictions ended (or polling broke); shared with the store pool.
    """

    def __init__(
        self,
        make_hook: Callable[[str], CometAPIHook],
        *,
        conn_id: str,
        poll_interval: float,
        deadline: float,
        log: LoggerLike,
        news: threading.Event,
    ) -> None:
        self._make_hook = make_hook
        self._conn_id = conn_id
        self.poll_interval = poll_interval
        self.deadline = deadline
        self.log = log
        self.news = news
        self.error: str | None = None
        """Why polling broke for good (every poll failing ``MAX_FAILED_POLLS`` rounds in a row)."""
        self._lock = threading.Lock()
        self._added: list[str] = []
        self._ended: dict[str, Prediction | str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self._thread = threading.Thread(target=self._main, name="cometapi-batch-poller", daemon=True)
        self._started = threading.Event()

    def start(self, prediction_ids: list[str]) -> BackgroundPoller:
        self._added.extend(prediction_ids)
        self._thread.start()
        self._started.wait(_STOP_SECONDS)
        return self

    def watch(self, prediction_id: str) -> None:
        """Poll this prediction from the next round on."""
        with self._lock:
            self._added.append(prediction_id)

    def take_ended(self) -> dict[str, Prediction | str]:
        """
        The predictions that ended since the last call: id to the poll's answer (fresh output
        URLs), or ``lost`` when polling it failed for good (the worker asks once more).
        """
        with self._lock:
            ended, self._ended = self._ended, {}
        return ended

    def stop(self) -> dict[str, Prediction | str]:
        """Stop after the round in flight (bounded); what ended and was not taken yet."""
        self._stop_requested = True
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with suppress(RuntimeError):  # the loop has closed already
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(_STOP_SECONDS)
        return self.take_ended()

    # --- On the poller's thread ----------------------------------------------------------

    def _main(self) -> None:
        try:
            asyncio.run(self._poll())
        except Exception as error:  # the worker must hear of it, not a dead thread
            self.error = f"Polling stopped unexpectedly: {type(error).__name__}: {error}"
            self.news.set()
        finally:
            self._started.set()

    async def _poll(self) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        self._started.set()
        watch = _AnsweringWatch(
            prediction_ids=[],
            poll_interval=self.poll_interval,
            deadline=self.deadline,
            resume_after=sys.maxsize,  # never "ready": the worker takes what ended after every round
            log=self.log,
        )
        round_seconds = 0.0
        async with self._make_hook(self._conn_id) as hook:
            while not self._stop_requested:
                # Sleeps first (every id handed over was just created or seen running); a round
                # starts ``poll_interval`` after the last one started.
                try:
                    await asyncio.wait_for(self._stopping.wait(), max(0.0, self.poll_interval - round_seconds))
                    break
                except TimeoutError:
                    pass
                started = time.monotonic()
                with self._lock:
                    added, self._added = self._added, []
                for prediction_id in added:
                    watch.running.setdefault(prediction_id, "starting")
                if not watch.running:
                    round_seconds = 0.0
                    continue
                event = watch.after_round(await poll_round(hook, watch))
                if event is not None and event["reason"] == "error":
                    self.error = event["message"]
                if watch.finished or self.error:
                    with self._lock:
                        for prediction_id, status in watch.finished.items():
                            self._ended[prediction_id] = watch.answers.pop(prediction_id, status)
                    watch.finished.clear()
                    watch.answers.clear()
                    self.news.set()
                round_seconds = time.monotonic() - started
