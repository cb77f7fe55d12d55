"""
The batch manifest: one JSON line per input, the record a retry, a killed worker or a cleared
task reads back so that no input ever gets a second prediction while it has one.

Each line (``ManifestEntry.to_json``)::

    {"v": 1, "index": 0, "line": 1, "input": {"prompt": "a fox"}, "fingerprint": "<sha256>",
     "prediction_id": "abc", "status": "succeeded", "error": null, "outputs": ["https://..."],
     "stored": ["file:///data/abc_0.webp", "file:///data/abc.json"], "attempts": 1,
     "previous_ids": [], "cancelled": false, "images": 1, "cost": 0.003}

``images`` and ``cost`` (in the connection's currency) are what the input's ended predictions
made, ``null`` until one ended (and ``cost`` ``null`` when the model has no price); lines
written before they existed read back without them. ``status`` ``skipped`` is an input the
batch's ``max_images`` / ``max_cost`` left uncreated (a later try checks it again).

The file is rewritten whole and atomically (``storage.store_file``, the write of outputs), so a
reader sees one checkpoint or the next, never a mix. Reading is strict: a line that is not one
of ours fails with its line number instead of being skipped, since a skipped line would be an
input created twice.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

from airflow_provider_cometapi.exceptions import (
    BatchManifestError,
    BatchManifestMismatchError,
    InvalidPredictionIdError,
)
from airflow_provider_cometapi.models import TERMINAL_STATUSES, UNSUCCESSFUL_STATUSES, check_prediction_id

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

MANIFEST_VERSION = 1
PENDING = "pending"
"""No prediction yet: the next step creates one."""
UNCERTAIN = "uncertain"
"""A create was sent but no answer came back (a timeout, a reset): a prediction may exist, so the
input is never sent again; it counts as failed."""
SKIPPED = "skipped"
"""Not created: the batch's budget (``max_images`` / ``max_cost``) did not allow it. A later try
(a retry, a clear) checks it against the budget again."""
FINAL_STATUSES: frozenset[str] = TERMINAL_STATUSES | {UNCERTAIN}
# A manifest line is small (the input with data: URIs shortened); a far longer one is not ours.
MAX_LINE_BYTES = 1024 * 1024
_CHUNK_BYTES = 256 * 1024
_DATA_URI_PREVIEW = 48


@dataclass
class ManifestEntry:
    """One input of the batch and what became of it."""

    index: int
    input: dict[str, Any]
    fingerprint: str
    line: int | None = None
    prediction_id: str | None = None
    status: str = PENDING
    error: str | None = None
    outputs: list[str] = field(default_factory=list)
    stored: list[str] | None = None
    attempts: int = 0
    previous_ids: list[str] = field(default_factory=list)
    cancelled: bool = False
    images: int | None = None
    cost: float | None = None
    completed_at: str | None = None

    @property
    def is_final(self) -> bool:
        """Ended: succeeded, failed, canceled, aborted or uncertain."""
        return self.status in FINAL_STATUSES

    @property
    def is_running(self) -> bool:
        """Has a prediction that has not ended (``starting``, ``processing``, or an unknown status)."""
        return self.prediction_id is not None and not self.is_final

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def unsuccessful(self) -> bool:
        return self.status in UNSUCCESSFUL_STATUSES or self.status == UNCERTAIN

    def state(self) -> tuple[Any, ...]:
        """Every field a batch changes, compared by value: equal states render the same line."""
        return (
            self.prediction_id,
            self.status,
            self.error,
            tuple(self.outputs),
            None if self.stored is None else tuple(self.stored),
            self.attempts,
            tuple(self.previous_ids),
            self.cancelled,
            self.images,
            self.cost,
            self.completed_at,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "v": MANIFEST_VERSION,
            "index": self.index,
            "line": self.line,
            "input": self.input,
            "fingerprint": self.fingerprint,
            "prediction_id": self.prediction_id,
            "status": self.status,
            "error": self.error,
            "outputs": self.outputs,
            "stored": self.stored,
            "attempts": self.attempts,
            "previous_ids": self.previous_ids,
            "cancelled": self.cancelled,
            "images": self.images,
            "cost": self.cost,
            "completed_at": self.completed_at,
        }

    @classmethod
    def from_json(cls, data: Any, *, where: str) -> ManifestEntry:
        """One line read back, every field checked; ``where`` names the line in messages."""
        if not isinstance(data, Mapping):
            raise corrupt_manifest(where, "it is not a JSON object")
        if data.get("v") != MANIFEST_VERSION:
            raise corrupt_manifest(
                where, f"its version {data.get('v')!r} is not {MANIFEST_VERSION} (a newer release wrote it?)"
            )
        index, line, attempts = data.get("index"), data.get("line"), data.get("attempts", 0)
        if not is_count(index) or not (line is None or is_count(line)) or not is_count(attempts):
            raise corrupt_manifest(where, "its index, line or attempts is not a whole number >= 0")
        model_input, fingerprint, status = data.get("input"), data.get("fingerprint"), data.get("status")
        if (
            not isinstance(model_input, Mapping)
            or not isinstance(fingerprint, str)
            or not _FINGERPRINT.fullmatch(fingerprint)
        ):
            raise corrupt_manifest(where, "its input or fingerprint is missing or malformed")
        if not isinstance(status, str) or not _STATUS.fullmatch(status):
            raise corrupt_manifest(where, f"its status {str(status)[:40]!r} is not a status")
        error, cancelled = data.get("error"), data.get("cancelled", False)
        if not (error is None or isinstance(error, str)) or not isinstance(cancelled, bool):
            raise corrupt_manifest(where, "its error or cancelled field has the wrong type")
        outputs, stored, previous = data.get("outputs", []), data.get("stored"), data.get("previous_ids", [])
        if not _strings(outputs) or not (stored is None or _strings(stored)) or not _strings(previous):
            raise corrupt_manifest(where, "its outputs, stored or previous_ids is not a list of strings")
        try:
            prediction_id = data.get("prediction_id")
            checked_id = None if prediction_id is None else check_prediction_id(prediction_id)
            checked_previous = [check_prediction_id(earlier) for earlier in previous]
        except InvalidPredictionIdError as error_:
            raise corrupt_manifest(where, f"it names a prediction id that cannot be one ({error_})") from None
        images, cost = data.get("images"), data.get("cost")
        if not (images is None or is_count(images)) or not (cost is None or _is_amount(cost)):
            raise corrupt_manifest(where, "its images or cost is not a number >= 0")
        completed_at = data.get("completed_at")
        if not (completed_at is None or (isinstance(completed_at, str) and len(completed_at) <= MAX_TIME_CHARS)):
            raise corrupt_manifest(where, "its completed_at is not a time")
        if status not in (PENDING, UNCERTAIN, SKIPPED) and status != "failed" and checked_id is None:
            raise corrupt_manifest(where, f"its status is {status} but it names no prediction")
        return cls(
            index=index,
            input=dict(model_input),
            fingerprint=fingerprint,
            line=line,
            prediction_id=checked_id,
            status=status,
            error=error,
            outputs=list(outputs),
            stored=None if stored is None else list(stored),
            attempts=attempts,
            previous_ids=checked_previous,
            cancelled=cancelled,
            images=images,
            cost=None if cost is None else float(cost),
            completed_at=completed_at,
        )


# A time as the gateway wrote it (ISO 8601); longer is not one, and is not kept.
MAX_TIME_CHARS = 64
_FINGERPRINT = re.compile(r"[0-9a-f]{64}", re.ASCII)
_STATUS = re.compile(r"[a-z][a-z_]{0,39}", re.ASCII)


def is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_amount(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def corrupt_manifest(where: str, why: str) -> BatchManifestError:
    return BatchManifestError(
        f"Cannot read the batch manifest: {where} {why}. The manifest is the record of which inputs already "
        "have a prediction, so the batch stops rather than risk paying twice. Restore the file, or delete it "
        "(or give the operator another `manifest`) to start the batch over."
    )


def shown_input(model_input: Mapping[str, Any]) -> dict[str, Any]:
    """The input as the manifest records it: ``data:`` URIs (whole images) shortened to a preview."""
    return {key: _preview(value) for key, value in model_input.items()}


def _preview(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("data:") and len(value) > _DATA_URI_PREVIEW:
        return f"{value[:_DATA_URI_PREVIEW]}...({len(value)} chars)"
    return value


# --- Reading and writing --------------------------------------------------------------------


def parse_manifest(lines: Iterable[str | bytes], *, uri: str) -> list[ManifestEntry]:
    """
    The entries of a manifest, in index order, every line checked.

    Blank lines are ignored. The indices must be exactly 0..n-1, each once.

    :raises BatchManifestError: a line that is not JSON (a truncated file), not one of ours, or
        an index missing or listed twice.
    """
    by_index: dict[int, ManifestEntry] = {}
    for number, raw in enumerate(lines, start=1):
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        if not text.strip():
            continue
        where = f"line {number} of {uri}"
        if len(text) > MAX_LINE_BYTES:
            raise corrupt_manifest(where, f"is longer than {MAX_LINE_BYTES // 1024} KiB")
        try:
            data = json.loads(text)
        except ValueError as error:
            raise corrupt_manifest(where, f"is not JSON ({error}; a truncated or edited file?)") from None
        entry = ManifestEntry.from_json(data, where=where)
        if entry.index in by_index:
            raise corrupt_manifest(where, f"lists input {entry.index} a second time")
        by_index[entry.index] = entry
    missing = [index for index in range(len(by_index)) if index not in by_index]
    if missing:
        raise corrupt_manifest(
            uri, f"lacks input {missing[0]} (it lists {len(by_index)} inputs, numbered up to {max(by_index)})"
        )
    return [by_index[index] for index in range(len(by_index))]


def render_line(entry: ManifestEntry) -> bytes:
    return (json.dumps(entry.to_json(), separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def render_manifest(entries: Sequence[ManifestEntry], lines: RenderedLines | None = None) -> Iterator[bytes]:
    """
    The manifest's bytes, in chunks of about 256 KiB (never the whole file in memory twice).

    :param lines: the lines of the last rendering, kept: only the entries that changed since
        are encoded again.
    """
    render = render_line if lines is None else lines.line
    chunk: list[bytes] = []
    size = 0
    for entry in entries:
        line = render(entry)
        chunk.append(line)
        size += len(line)
        if size >= _CHUNK_BYTES:
            yield b"".join(chunk)
            chunk, size = [], 0
    if chunk:
        yield b"".join(chunk)


class RenderedLines:
    """
    Each entry's line as last rendered, with the state it was rendered from.

    A checkpoint of 10,000 lines while a batch runs has a few hundred that changed: comparing
    states is an order of magnitude cheaper than encoding every line again.
    """

    def __init__(self) -> None:
        self._lines: dict[int, tuple[tuple[Any, ...], bytes]] = {}

    def line(self, entry: ManifestEntry) -> bytes:
        state = entry.state()
        kept = self._lines.get(entry.index)
        if kept is not None and kept[0] == state:
            return kept[1]
        line = render_line(entry)
        self._lines[entry.index] = (state, line)
        return line


def read_manifest(path: ObjectStoragePath) -> list[ManifestEntry] | None:
    """The manifest at ``path``, or ``None`` when there is none yet."""
    try:
        if not path.exists():
            return None
        with path.open("rb") as handle:
            return parse_manifest(handle, uri=str(path))
    except OSError as error:
        raise BatchManifestError(
            f"Cannot read the batch manifest {path}: {error}. Check the storage connection's read access; "
            "the batch creates nothing until it can read which inputs already have a prediction."
        ) from error


def check_matches(entries: Sequence[ManifestEntry], fingerprints: Sequence[str], *, uri: str) -> None:
    """
    Refuse a manifest written for other inputs (or another model) than the batch now has.

    :raises BatchManifestMismatchError: another number of inputs, or an input that changed.
    """
    if len(entries) != len(fingerprints):
        raise _mismatch(uri, f"lists {len(entries):,} inputs, the batch now has {len(fingerprints):,}")
    for entry, fingerprint in zip(entries, fingerprints, strict=True):
        if entry.fingerprint != fingerprint:
            raise _mismatch(uri, f"input {entry.index} (or the model) differs from the one it records")


def _mismatch(uri: str, why: str) -> BatchManifestMismatchError:
    return BatchManifestMismatchError(
        f"The batch manifest {uri} was written for other inputs: it {why}. Nothing was created. To run "
        "these inputs, delete that manifest or give the operator another `manifest` (or `destination`)."
    )


def counts(entries: Iterable[ManifestEntry]) -> dict[str, int]:
    """
    ``total``, ``succeeded``, ``failed`` (every unsuccessful end: failed, canceled, aborted,
    uncertain), ``canceled`` (of those), ``running``, ``pending``, ``skipped`` (left uncreated by
    the budget) and ``predictions`` (created, retries included).
    """
    tally = dict.fromkeys(
        ("total", "succeeded", "failed", "canceled", "running", "pending", "skipped", "predictions"), 0
    )
    for entry in entries:
        tally["total"] += 1
        tally["predictions"] += len(entry.previous_ids) + (entry.prediction_id is not None)
        if entry.succeeded:
            tally["succeeded"] += 1
        elif entry.unsuccessful:
            tally["failed"] += 1
            tally["canceled"] += entry.status == "canceled"
        elif entry.is_running:
            tally["running"] += 1
        elif entry.status == SKIPPED:
            tally["skipped"] += 1
        else:
            tally["pending"] += 1
    return tally
