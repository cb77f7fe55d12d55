"""
Metrics, through Airflow's own metrics layer: StatsD, Datadog or OpenTelemetry, as configured.

One function per event; every name begins ``cometapi.`` (docs/metrics-and-lineage.md lists
them). Nothing here is a client of its own: each metric goes to Airflow's ``Stats``
(``airflow.providers.common.compat.sdk.Stats``, which is ``airflow.sdk.observability.stats``
on Airflow 3.3, ``airflow.stats`` on 3.1), so ``[metrics] statsd_on``, ``otel_on`` or
``statsd_datadog_enabled`` and their prefixes, allow and block lists apply. Each metric is
tagged with the model (``model``); a backend that has no tags (plain StatsD without
``statsd_influxdb_enabled``) keeps the name only.

Nothing is emitted per poll. Where a wait ends on a worker (no event loop running), its metrics
are sent at once. While waits are in flight in an event loop (a triggerer, with thousands of
them: ``wait_started``/``wait_finished``), sending five metrics per prediction would cost a large
part of what waiting for it costs, so they are added up in the process and sent together every
``FLUSH_SECONDS``, and at once when the last wait in flight ends: counters as one sum per name
and model, at most ``TIMER_SAMPLES`` samples per timer, model and flush (the rest are left out;
counts come from the counters), and the gauge of waits in flight once per flush. A failure to
emit never fails a task or a trigger.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_cometapi.cost import image_count

if TYPE_CHECKING:
    from airflow_provider_cometapi.models import Prediction

PREFIX: Final = "cometapi."
CREATED: Final = "cometapi.predictions.created"
IMAGES: Final = "cometapi.images"
COST: Final = "cometapi.cost"
PREDICT_TIME: Final = "cometapi.predict_time"
WAIT: Final = "cometapi.wait"
IN_FLIGHT: Final = "cometapi.predictions.in_flight"
# Terminal statuses count as cometapi.predictions.<status>; a wait that ended without an end of
# the prediction as cometapi.waits.<timeout|error>.
ENDED: Final = {status: f"cometapi.predictions.{status}" for status in ("succeeded", "failed", "canceled", "aborted")}
WAIT_ENDED: Final = {status: f"cometapi.waits.{status}" for status in ("timeout", "error")}

# In an event loop: how often the sums go out, and how many samples of each timer (per model) one flush sends.
FLUSH_SECONDS = 5.0
TIMER_SAMPLES = 50
UNKNOWN_MODEL: Final = "unknown"
_TAG_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-/")
_MAX_TAG_CHARS = 100

log = logging.getLogger(__name__)

Tags = tuple[tuple[str, str], ...]


def prediction_created(model: object) -> None:
    """A prediction was created (``model``: its id, ``owner/name[:version]``, or a ``ModelId``)."""
    _metrics().add(CREATED, 1, _model_tags(model))


def created(model: object, prediction: Prediction) -> Prediction:
    """``prediction_created(model)``, then ``prediction``: the hook's create path in one expression."""
    prediction_created(model)
    return prediction


def prediction_ended(
    prediction: Prediction,
    waited_s: float | None = None,
    *,
    images: int | None = None,
    cost: float | None = None,
    currency: str | None = None,
) -> None:
    """
    A wait saw ``prediction`` end (terminal): its status counter, images, cost and timers.

    :param waited_s: how long the wait that saw it end lasted; no ``cometapi.wait`` when ``None``.
    :param images: images it produced; by default ``cost.image_count`` (the gateway's
        ``metrics.image_count``, else its outputs counted).
    :param cost: what it cost (``cost.cost_of``), in ``currency``; no ``cometapi.cost`` when ``None``.
    """
    name = ENDED.get(prediction.status)
    if name is None:  # not terminal: nothing ended
        return
    tags = _model_tags(prediction.model)
    metrics = _metrics()
    metrics.add(name, 1, tags)
    count = image_count(prediction) if images is None else images  # the one rule, cost's
    if count:
        metrics.add(IMAGES, count, tags)
    if cost is not None:
        metrics.add(COST, cost, (*tags, ("currency", _tag_value(currency or "unknown"))))
    predict_time = _predict_time(prediction)
    if predict_time is not None:
        metrics.time(PREDICT_TIME, predict_time, tags)
    if waited_s is not None:
        metrics.time(WAIT, waited_s, tags)


def wait_ended_without_end(status: str, model: object = None, waited_s: float | None = None) -> None:
    """A wait ended before the prediction did: ``status`` ``timeout`` (its deadline) or ``error`` (polling failed)."""
    name = WAIT_ENDED.get(status)
    if name is None:
        return
    tags = _model_tags(model)
    metrics = _metrics()
    metrics.add(name, 1, tags)
    if waited_s is not None:
        metrics.time(WAIT, waited_s, tags)


def wait_started(count: int = 1) -> None:
    """
    A wait began in this process's event loop (a trigger): ``count`` more predictions in
    ``cometapi.predictions.in_flight`` (a batch's trigger: the predictions it watches).
    """
    _metrics().in_flight += count


def wait_finished(count: int = 1) -> None:
    """``count`` predictions waited for in this process's event loop are over (however they ended)."""
    metrics = _metrics()
    metrics.in_flight = max(0, metrics.in_flight - count)
    if metrics.in_flight == 0:
        metrics.flush()  # the last one: nothing waits for the next flush (dag.test(), a quiet triggerer)


def _predict_time(prediction: Prediction) -> float | None:
    gateway = prediction.raw.get("metrics")
    if not isinstance(gateway, Mapping):
        return None
    seconds = gateway.get("predict_time")
    if isinstance(seconds, int | float) and not isinstance(seconds, bool) and 0 <= seconds < 1e7:
        return float(seconds)
    return None


def _model_tags(model: object) -> Tags:
    text = str(model) if model is not None else ""
    # The model without its version: one series per model, not per version.
    return (("model", _tag_value(text.split(":", 1)[0]) or UNKNOWN_MODEL),)


def _tag_value(text: str) -> str:
    text = text[:_MAX_TAG_CHARS]
    if all(c in _TAG_CHARS for c in text):
        return text
    return "".join(c if c in _TAG_CHARS else "_" for c in text)


class _Metrics:
    """What this process has to send: at once outside an event loop, added up inside one."""

    def __init__(self) -> None:
        self.in_flight = 0
        self._counters: dict[tuple[str, Tags], float] = {}
        self._timers: dict[tuple[str, Tags], list[float]] = {}
        self._flush_at: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None
        self._stats: Any = None
        self._failed = False
        self._hostname: Tags | None = None
        self._reported_in_flight = 0

    def add(self, name: str, value: float, tags: Tags) -> None:
        if not self._adding_up():
            self._send(lambda stats: stats.incr(name, value, tags=dict(tags)))
            return
        key = (name, tags)
        self._counters[key] = self._counters.get(key, 0) + value
        self._flush_later()

    def time(self, name: str, seconds: float, tags: Tags) -> None:
        if not self._adding_up():
            self._send(lambda stats: stats.timing(name, timedelta(seconds=seconds), tags=dict(tags)))
            return
        samples = self._timers.setdefault((name, tags), [])
        if len(samples) < TIMER_SAMPLES:
            samples.append(seconds)
        self._flush_later()

    def _adding_up(self) -> bool:
        # Only while waits are in flight in an event loop: elsewhere (a worker, a create outside
        # any wait) there are few metrics, and a process or loop may end before a later flush.
        return self.in_flight > 0 and _in_event_loop()

    def _flush_later(self) -> None:
        loop = asyncio.get_running_loop()
        if self._flush_at is None or self._flush_at[0] is not loop:  # none yet, or on a loop gone since
            self._flush_at = (loop, loop.call_later(FLUSH_SECONDS, self._periodic_flush))

    def _periodic_flush(self) -> None:
        self._flush_at = None
        self.flush()
        if self.in_flight:  # the gauge goes on being reported while waits are in flight
            self._flush_later()

    def flush(self) -> None:
        """Send what was added up, and the gauge of waits in flight."""
        if self._flush_at is not None:
            self._flush_at[1].cancel()
            self._flush_at = None
        if not (self._counters or self._timers or self.in_flight or self._reported_in_flight):
            return  # nothing happened since the last flush
        self._reported_in_flight = self.in_flight
        counters, self._counters = self._counters, {}
        timers, self._timers = self._timers, {}
        in_flight = self.in_flight

        def send(stats: Any) -> None:
            for (name, tags), value in counters.items():
                stats.incr(name, value, tags=dict(tags))
            for (name, tags), samples in timers.items():
                for seconds in samples:
                    stats.timing(name, timedelta(seconds=seconds), tags=dict(tags))
            stats.gauge(IN_FLIGHT, in_flight, tags=dict(self._host_tags()))

        self._send(send)

    def _host_tags(self) -> Tags:
        if self._hostname is None:
            self._hostname = (("hostname", _tag_value(socket.gethostname())),)
        return self._hostname

    def _send(self, emit: Any) -> None:
        try:
            if self._stats is None:
                from airflow.providers.common.compat.sdk import Stats

                self._stats = Stats
            emit(self._stats)
        except Exception:  # metrics must never fail a task or a trigger
            if not self._failed:
                self._failed = True
                log.warning("Could not send CometAPI metrics through Airflow's Stats.", exc_info=True)


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


_METRICS = _Metrics()


def _metrics() -> _Metrics:
    return _METRICS


def reset_for_tests() -> None:
    """Forget what was added up and the waits in flight (tests)."""
    global _METRICS
    if _METRICS._flush_at is not None:
        _METRICS._flush_at[1].cancel()
    _METRICS = _Metrics()


__all__ = [
    "COST",
    "CREATED",
    "ENDED",
    "IMAGES",
    "IN_FLIGHT",
    "PREDICT_TIME",
    "WAIT",
    "WAIT_ENDED",
    "created",
    "prediction_created",
    "prediction_ended",
    "wait_ended_without_end",
    "wait_finished",
    "wait_started",
]
