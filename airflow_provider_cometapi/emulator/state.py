"""Predictions and counters of a running emulator.

No timer runs per prediction: a prediction's status is worked out from the monotonic clock
whenever it is asked for, so 10,000 predictions in flight cost only their records. Finished
ones are forgotten by ``Retention`` (retention.py).
"""

from __future__ import annotations

import functools
import json
import random
import secrets
import string
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_cometapi.emulator import images
from airflow_provider_cometapi.emulator.faults import FaultBook
from airflow_provider_cometapi.emulator.models import DEFAULT_ERRORS, Control, ModelInfo
from airflow_provider_cometapi.emulator.ratelimit import CreateLimiter
from airflow_provider_cometapi.emulator.retention import Retention

if TYPE_CHECKING:
    import asyncio

    from airflow_provider_cometapi.emulator.config import EmulatorConfig

TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled", "aborted"})
_ID_ALPHABET = string.ascii_lowercase + string.digits
_rng = random.SystemRandom()
_BAR_PARTS = " ▏▎▍▌▋▊▉"
_BAR_WIDTH = 10


def iso(ts: float) -> str:
    """Epoch seconds -> ``2026-03-12T11:27:18.258Z`` as the API writes it."""
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _bar(i: int, steps: int) -> str:
    eighths = i * _BAR_WIDTH * 8 // steps
    full, part = divmod(eighths, 8)
    bar = "█" * full + (_BAR_PARTS[part] if part else "")
    return bar.ljust(_BAR_WIDTH)


@functools.lru_cache(maxsize=64)
def progress_lines(steps: int) -> tuple[str, ...]:
    """tqdm-like lines, `` 25%|██▌       | 1/4``, one per step including 0."""
    return tuple(f"{i * 100 // steps:3d}%|{_bar(i, steps)}| {i}/{steps}\n" for i in range(steps + 1))


class Prediction:
    """One prediction; slots keep the record small."""

    __slots__ = (
        "_cache_body",
        "_cache_key",
        "aspect_ratio",
        "body_bytes",
        "canceled_at",
        "cancels",
        "created",
        "created_at",
        "created_wall",
        "data_uri",
        "data_uris",
        "duration",
        "error",
        "file_token",
        "id",
        "input",
        "model",
        "n",
        "outcome",
        "output_format",
        "partial_output",
        "polls",
        "prompt",
        "quality",
        "seed",
        "starting_for",
        "unknown_status",
        "waiter",
    )

    def __init__(
        self,
        pid: str,
        model: ModelInfo,
        echo: dict[str, Any],
        control: Control,
        config: EmulatorConfig,
        now: float,
        wall: float,
        body_bytes: int = 0,
    ) -> None:
        self.id = pid
        # Output URLs are public like a CDN's, so they carry a secret of their own: knowing
        # a prediction's id (logs, UI links) is not enough to fetch its images.
        self.file_token = secrets.token_urlsafe(16)
        self.body_bytes = body_bytes
        self.model = model
        self.input = echo
        prompt = echo.get("prompt")
        self.prompt: str = prompt if isinstance(prompt, str) else ""
        seed = echo.get("seed")
        self.seed: int = seed if isinstance(seed, int) else _rng.randrange(65536)
        self.n: int = int(echo.get("num_outputs", 1)) if model.list_output else 1
        self.output_format: str = str(echo.get("output_format", images.DEFAULT_FORMAT))
        self.quality: int = int(echo.get("output_quality", images.DEFAULT_QUALITY))
        self.aspect_ratio: str = str(echo.get("aspect_ratio", images.DEFAULT_ASPECT_RATIO))
        self.created = now
        self.created_wall = wall
        self.created_at = iso(wall)
        self.duration: float = control.duration if control.duration is not None else config.duration
        starting_for = control.starting_for if control.starting_for is not None else config.starting_for
        self.starting_for: float = min(starting_for, self.duration)
        self.outcome = control.outcome
        self.error: str | None = control.error or DEFAULT_ERRORS.get(control.outcome)
        self.unknown_status = control.unknown_status
        self.data_uri = control.data_uri
        self.partial_output = control.partial_output
        self.data_uris: list[str] | None = None
        self.canceled_at: float | None = None
        self.polls = 0
        self.cancels = 0
        self.waiter: asyncio.Event | None = None
        self._cache_key: tuple[Any, ...] | None = None
        self._cache_body = b""

    def status_at(self, now: float) -> tuple[str, float | None]:
        """(status, seconds from creation to the terminal state, or None while running)."""
        if self.canceled_at is not None:
            return "canceled", self.canceled_at - self.created
        elapsed = now - self.created
        if elapsed < self.starting_for:
            return "starting", None
        if self.outcome == "never" or elapsed < self.duration:
            return self.unknown_status or "processing", None
        return self.outcome, self.duration

    def terminal_at(self) -> float | None:
        """The monotonic time the status is or will be terminal; None while it never will be."""
        if self.canceled_at is not None:
            return self.canceled_at
        if self.outcome == "never":
            return None
        return self.created + self.duration

    def seconds_to_terminal(self, now: float) -> float | None:
        """How long until the status is terminal by itself; None if it never will be."""
        if self.canceled_at is not None:
            return 0.0
        if self.outcome == "never":
            return None
        return max(0.0, self.created + self.duration - now)

    def _step(self, status: str, end: float | None, now: float) -> int:
        """Progress step shown in the logs; -1 before the model started."""
        steps = self.model.steps
        if end is None:
            at = now - self.created
        elif status == "succeeded":
            return steps
        elif self.canceled_at is None:
            return steps - 1  # failed, aborted or canceled by outcome: stopped just short
        else:
            at = end
        if at < self.starting_for:
            return -1
        span = self.duration - self.starting_for
        frac = (at - self.starting_for) / span if span > 0 else 1.0
        return min(int(frac * steps), steps - 1)

    def needs_data_uris(self, now: float, output_ttl: float) -> bool:
        """Whether the next answer shows data: URIs that have not been rendered yet."""
        if self.data_uris is not None:
            return False
        status, end = self.status_at(now)
        if status == "succeeded":
            return self.data_uri and now - (self.created + self.duration) < output_ttl
        return self.partial_output and end is None and status != "starting"

    def file_url(self, base: str, index: int) -> str:
        return f"{base}/files/{self.id}/{self.file_token}/out-{index}.{self.output_format}"

    def to_json(self, base: str, now: float, output_ttl: float) -> bytes:
        """The prediction as the API answers it; reused while nothing visible changed."""
        status, end = self.status_at(now)
        expired = end is not None and now - (self.created + end) >= output_ttl
        step = self._step(status, end, now)
        key = (status, step, expired, base, self.data_uris is not None)
        if key == self._cache_key:
            return self._cache_body

        output: Any = None
        if not expired:
            if status == "succeeded":
                if self.data_uri and self.data_uris is not None:
                    output = list(self.data_uris)
                else:
                    output = [self.file_url(base, i) for i in range(self.n)]
            elif end is None and self.partial_output and self.data_uris is not None:
                output = list(self.data_uris)
            if output is not None and not self.model.list_output:
                output = output[0]

        logs = ""
        if step >= 0:
            logs = f"Using seed: {self.seed}\n" + "".join(progress_lines(self.model.steps)[: step + 1])
            if status == "succeeded":
                logs += f"Total safe images: {self.n} out of {self.n}\n"
            elif status in ("failed", "aborted") and self.error:
                logs += f"{self.error}\n"

        started = self.starting_for if (status != "starting" and (end is None or end >= self.starting_for)) else None
        pid = self.id
        body: dict[str, Any] = {
            "id": pid,
            "model": self.model.model_id,
            "version": "hidden",
            "input": self.input,
            "logs": logs,
            "output": output,
            "data_removed": expired,
            "error": self.error if status in ("failed", "aborted") else None,
            "source": "api",
            "status": status,
            "created_at": self.created_at,
            "started_at": iso(self.created_wall + started) if started is not None else None,
            "completed_at": iso(self.created_wall + end) if end is not None else None,
            "urls": {
                "cancel": f"https://api.replicate.com/v1/predictions/{pid}/cancel",
                "get": f"https://api.replicate.com/v1/predictions/{pid}",
                "stream": f"https://stream.replicate.com/v1/files/{pid}",
                "web": f"https://replicate.com/p/{pid}",
            },
        }
        if status == "succeeded":
            body["metrics"] = {
                "predict_time": round(self.duration - self.starting_for, 6),
                "total_time": round(self.duration, 6),
                "image_count": self.n,
            }
        encoded = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        self._cache_key = key
        self._cache_body = encoded
        return encoded


class Stats:
    __slots__ = ("cancels", "creates", "faults_served", "file_downloads", "models", "polls", "requests")

    def __init__(self) -> None:
        self.creates = 0
        self.polls = 0
        self.cancels = 0
        self.file_downloads = 0
        self.models = 0
        self.requests = 0
        self.faults_served = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class Store:
    """All mutable state of one emulator application."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.predictions: dict[str, Prediction] = {}
        self.retention = Retention(self.predictions, config)
        self.stats = Stats()
        self.faults = FaultBook()
        for rule in config.faults:
            self.faults.add(rule)
        self.create_limiter = CreateLimiter(config.create_limit, config.create_burst)

    def new_id(self) -> str:
        while True:
            pid = "".join(_rng.choices(_ID_ALPHABET, k=26))
            if pid not in self.predictions:
                return pid

    def create(
        self,
        model: ModelInfo,
        echo: dict[str, Any],
        control: Control,
        now: float,
        wall: float,
        body_bytes: int = 0,
    ) -> Prediction:
        """A new prediction; the caller has made room for it (``retention.make_room``)."""
        pred = Prediction(self.new_id(), model, echo, control, self.config, now, wall, body_bytes)
        self.predictions[pred.id] = pred
        self.retention.added(pred)
        self.stats.creates += 1
        return pred

    def cancel(self, pred: Prediction, now: float) -> None:
        """Cancel a running prediction: terminal now, and forgotten on that clock."""
        pred.canceled_at = now
        self.retention.finishes(pred)
        if pred.waiter is not None:
            pred.waiter.set()

    def reset(self) -> None:
        self.predictions.clear()
        self.retention.clear()
        self.stats = Stats()
        self.faults.clear()
        # The limit given at start, with full buckets: a test's own limit ends with its reset.
        self.create_limiter = CreateLimiter(self.config.create_limit, self.config.create_burst)

    def stats_dict(self, now: float, detail: bool) -> dict[str, Any]:
        out: dict[str, Any] = self.stats.as_dict()
        out["in_flight"] = sum(1 for p in self.predictions.values() if p.status_at(now)[1] is None)
        out["total_predictions"] = len(self.predictions)
        out["evicted"] = self.retention.evicted
        out["stored_bytes"] = self.retention.stored_bytes
        out["throttled_creates"] = self.create_limiter.throttled
        if detail:
            out["predictions"] = {
                p.id: {
                    "model": p.model.model_id,
                    "prompt": p.prompt,
                    "status": p.status_at(now)[0],
                    "polls": p.polls,
                    "cancels": p.cancels,
                }
                for p in self.predictions.values()
            }
        return out
