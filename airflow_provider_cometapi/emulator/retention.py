"""Which finished predictions the emulator forgets, and when, so its memory stays bounded.

A heap holds ``(terminal time, id)`` for every prediction that is or will be terminal. A sweep
pops only what is due, and making room on create pops the ones that finished longest ago: both
cost a heap operation per prediction forgotten, and nothing is done per poll.
Entries are checked when popped (a cancel pushes a second, earlier one; reset clears all).
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_cometapi.emulator.config import EmulatorConfig
    from airflow_provider_cometapi.emulator.state import Prediction


class Retention:
    """Forgets predictions of one store: ``forget_after`` past expiry, or oldest-finished first when full."""

    def __init__(self, predictions: dict[str, Prediction], config: EmulatorConfig) -> None:
        self._predictions = predictions
        self._keep_for = config.output_ttl + config.forget_after
        self._max_count = config.max_predictions
        self._max_bytes = config.max_stored_bytes
        self._heap: list[tuple[float, str]] = []
        self.stored_bytes = 0
        self.evicted = 0

    def added(self, pred: Prediction) -> None:
        """Account for a new prediction (already in the store)."""
        self.stored_bytes += pred.body_bytes
        self.finishes(pred)

    def finishes(self, pred: Prediction) -> None:
        """Note when ``pred`` is or will be terminal; call again after a cancel."""
        at = pred.terminal_at()
        if at is not None:
            heapq.heappush(self._heap, (at, pred.id))

    def sweep(self, now: float) -> int:
        """Forget the predictions whose outputs expired more than ``forget_after`` ago."""
        heap = self._heap
        before = self.evicted
        while heap and heap[0][0] + self._keep_for <= now:
            self._pop_and_forget()
        return self.evicted - before

    def make_room(self, now: float, body_bytes: int) -> bool:
        """Forget finished predictions until one of ``body_bytes`` fits; False if the rest still run."""
        self.sweep(now)
        heap = self._heap
        while len(self._predictions) >= self._max_count or self.stored_bytes + body_bytes > self._max_bytes:
            if not heap or heap[0][0] > now:
                return False
            self._pop_and_forget()
        return True

    def clear(self) -> None:
        """After the store forgot everything (reset): counters start again too."""
        self._heap.clear()
        self.stored_bytes = 0
        self.evicted = 0

    def _pop_and_forget(self) -> None:
        at, pid = heapq.heappop(self._heap)
        pred = self._predictions.get(pid)
        # Stale: forgotten already, or canceled before the time this entry was pushed for.
        if pred is None or pred.terminal_at() != at:
            return
        del self._predictions[pid]
        self.stored_bytes -= pred.body_bytes
        self.evicted += 1
