"""
What a DAG run recorded about its images, read from its XComs and asset events, as gallery cards.

Pure functions of already-loaded values (no database, no file, no Airflow context), so the
gallery's decisions are tested in milliseconds. A **reader** turns one recorded value (an XCom
or an asset event's ``extra``) into records; ``assemble`` turns every record of a run into one
card per image. Two readers exist:

* ``read_predictions``: a prediction as the create operator, the sensor or the decorator return
  it (``id``, ``status``, ``output``, ``input``...), the ``failed_prediction`` XCom the create
  operator and the sensor leave before they fail (``id``, ``status``, ``error``...), and the bare
  ``prediction_id`` XCom.
* ``read_stored_files``: the URIs of stored outputs and sidecars anywhere in the value, as the
  storage operator returns them and puts them in its asset events' ``extra``.

* ``read_batch_manifest``: the lines of the manifest a batch's result names (opened with
  ``open_text``, the one reader that opens a file).

 Only URIs that a reader found in the run's own records ever become something
the gallery opens (``StoredFile``), and only those whose scheme is a store (``is_store_uri``)
and whose file name is an output's or a sidecar's: a request can never name a file itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from airflow_provider_cometapi.storage import MEDIA_EXTENSIONS, UNSUITABLE_SCHEMES

# --- What a run recorded ----------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class TaskRef:
    """One task instance of the run: ``map_index`` -1 for a task that is not mapped."""

    task_id: str
    map_index: int = -1


@dataclass(frozen=True)
class PredictionInfo:
    """What is known of one prediction: from its task's result, a sidecar or a manifest line."""

    prediction_id: str
    task: TaskRef
    status: str | None = None
    model: str | None = None
    input: Mapping[str, Any] = field(default_factory=dict)
    output_urls: tuple[str, ...] = ()
    error: str | None = None
    created_at: str | None = None
    completed_at: str | None = None
    cost: float | None = None
    currency: str | None = None
    data_removed: bool = False


@dataclass(frozen=True)
class StoredFile:
    """A file a task recorded that it stored: an output ``<id>_<n>.<ext>`` or a sidecar ``<id>.json``."""

    uri: str
    task: TaskRef
    prediction_id: str
    index: int | None  # None for the sidecar

    @property
    def name(self) -> str:
        return file_name(self.uri)

    @property
    def is_sidecar(self) -> bool:
        return self.index is None


Record = PredictionInfo | StoredFile


class Reader(Protocol):
    """Turns one recorded value into records; ``open_text`` reads a recorded file (a manifest)."""

    def __call__(self, value: Any, task: TaskRef, open_text: Callable[[str], str]) -> Iterable[Record]: ...


# --- Names ---------------------------------------------------------------------------------

# The names storage.output_name and storage.sidecar_name make, and only those.
_ID = r"[A-Za-z0-9_-]{1,128}"
_OUTPUT_EXTENSIONS = "|".join(sorted(set(MEDIA_EXTENSIONS.values())))
OUTPUT_NAME = re.compile(rf"(?P<id>{_ID})_(?P<index>\d{{1,6}})\.(?P<ext>{_OUTPUT_EXTENSIONS})", re.ASCII)
SIDECAR_NAME = re.compile(rf"(?P<id>{_ID})\.json", re.ASCII)
PREDICTION_ID = re.compile(_ID, re.ASCII)
# "<id>_<index>": how a page names one image of a task.
IMAGE_KEY = re.compile(rf"(?P<id>{_ID})_(?P<index>\d{{1,6}})", re.ASCII)

MEDIA_TYPES: Mapping[str, str] = {
    **{extension: media_type for media_type, extension in MEDIA_EXTENSIONS.items()},
    "jpg": "image/jpeg",
    "wav": "audio/wav",
    "flac": "audio/flac",
}
IMAGE_EXTENSIONS = frozenset(ext for ext, media_type in MEDIA_TYPES.items() if media_type.startswith("image/"))


def file_name(uri: str) -> str:
    """The last path component of a URI or path (no query or fragment)."""
    return urlsplit(uri).path.rstrip("/").rsplit("/", 1)[-1] if "://" in uri else uri.rsplit("/", 1)[-1]


def is_store_uri(value: str) -> bool:
    """
    A URI or absolute path of a store the storage operator writes to.

    Not ``http(s)``, ``data``, ``memory`` or the other schemes storage refuses as a destination:
    the gallery must never fetch a URL on a request's behalf.
    """
    if value.startswith("/"):
        return "\x00" not in value
    scheme, sep, rest = value.partition("://")
    if not sep or not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme.lower()) or not rest:
        return False
    return scheme.lower() not in UNSUITABLE_SCHEMES and "\x00" not in value


def stored_file(uri: Any, task: TaskRef) -> StoredFile | None:
    """The recorded ``uri`` as a stored output or sidecar, or None if it is neither."""
    if not isinstance(uri, str) or len(uri) > 4096 or not is_store_uri(uri):
        return None
    name = file_name(uri)
    if match := OUTPUT_NAME.fullmatch(name):
        return StoredFile(uri, task, match["id"], int(match["index"]))
    if match := SIDECAR_NAME.fullmatch(name):
        return StoredFile(uri, task, match["id"], None)
    return None


# --- Readers ---------------------------------------------------------------------------------

_PREDICTION_KEYS = frozenset({"id", "status"})
_MAX_DEPTH = 4


def _walk(value: Any, depth: int = 0, skip: Callable[[Any], bool] | None = None) -> Iterator[Any]:
    """Every value inside ``value`` (lists, tuples and dicts), bounded in depth, not inside ``skip`` ones."""
    yield value
    if depth >= _MAX_DEPTH or (skip is not None and skip(value)):
        return
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _walk(item, depth + 1, skip)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _walk(item, depth + 1, skip)


def _is_prediction(value: Any) -> bool:
    return isinstance(value, Mapping) and value.keys() >= _PREDICTION_KEYS and "stored" not in value


def prediction_info(data: Mapping[str, Any], task: TaskRef) -> PredictionInfo | None:
    """A prediction dict (a task's result, a sidecar) as a ``PredictionInfo``; None if it is not one."""
    prediction_id = data.get("id")
    if not isinstance(prediction_id, str) or not PREDICTION_ID.fullmatch(prediction_id):
        return None
    output = data.get("output")
    urls = [output] if isinstance(output, str) else output if isinstance(output, list) else []
    model_input = data.get("input")
    cost = data.get("cost")
    error = data.get("error")
    return PredictionInfo(
        prediction_id=prediction_id,
        task=task,
        status=_text(data.get("status"), 40),
        model=_text(data.get("model"), 200),
        input=model_input if isinstance(model_input, Mapping) else {},
        output_urls=tuple(url for url in urls if isinstance(url, str) and _is_gateway_url(url)),
        error=None if error in (None, "") else str(error)[:2000],
        created_at=_text(data.get("created_at"), 64),
        completed_at=_text(data.get("completed_at"), 64),
        cost=float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else None,
        currency=_text(data.get("currency"), 8),
        data_removed=data.get("data_removed") is True,
    )


def read_predictions(value: Any, task: TaskRef, open_text: Callable[[str], str]) -> Iterator[Record]:
    """Predictions returned by the create operator, the sensor or the decorator (also in lists)."""
    if isinstance(value, str) and PREDICTION_ID.fullmatch(value):
        # The bare ``prediction_id`` XCom: a prediction whose result the task may never have recorded.
        yield PredictionInfo(prediction_id=value, task=task)
        return
    for item in _walk(value, skip=_is_prediction):
        if _is_prediction(item) and (info := prediction_info(item, task)) is not None:
            yield info


def read_stored_files(value: Any, task: TaskRef, open_text: Callable[[str], str]) -> Iterator[Record]:
    """
    Stored outputs and sidecars named anywhere in the value (a list of URIs, a dict of them).

    Not inside a prediction: its input may name another prediction's stored output (an edit
    chain's ``input_image``), which this task used, not stored.
    """
    for item in _walk(value, skip=_is_prediction):
        if isinstance(item, str) and (stored := stored_file(item, task)) is not None:
            yield stored


# A batch's manifest holds a line per input; more lines than this are not shown.
MAX_MANIFEST_LINES = 100_000
_BATCH_RESULT_KEYS = frozenset({"manifest", "total", "succeeded", "failed"})


def batch_manifest(value: Any) -> str | None:
    """The URI of the manifest a batch's result names, when ``value`` is one and the URI a store's."""
    if not isinstance(value, Mapping) or not value.keys() >= _BATCH_RESULT_KEYS:
        return None
    manifest = value.get("manifest")
    return manifest if isinstance(manifest, str) and is_store_uri(manifest) else None


def read_batch_manifest(value: Any, task: TaskRef, open_text: Callable[[str], str]) -> Iterator[Record]:
    """
    The predictions and stored files of a batch, from the manifest its result names.

    ``CreatePredictionBatchOperator`` returns counts and the manifest's URI, never per-input
    data; each manifest line has the input, the prediction's id, status, error, output URLs
    and stored URIs. A manifest that cannot be read, or a line that is not one of the
    manifest's, shows nothing rather than failing the page.
    """
    if (manifest := batch_manifest(value)) is None:
        return
    try:
        text = open_text(manifest)
    except Exception:  # gone, unreadable, or too large: the rest of the run still shows
        return
    yield from manifest_records(text, task)


def manifest_records(text: str, task: TaskRef) -> Iterator[Record]:
    """The records of a manifest's text (its first ``MAX_MANIFEST_LINES`` lines; others skipped)."""
    for line in text.splitlines()[:MAX_MANIFEST_LINES]:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, Mapping) or not isinstance(entry.get("prediction_id"), str):
            continue
        prediction = {
            "id": entry["prediction_id"],
            "status": entry.get("status"),
            "input": entry.get("input"),
            "output": entry.get("outputs"),
            "error": entry.get("error"),
            "cost": entry.get("cost"),
            "currency": entry.get("currency"),
            "completed_at": entry.get("completed_at"),
        }
        if (info := prediction_info(prediction, task)) is not None:
            yield info
        stored = entry.get("stored")
        for uri in stored if isinstance(stored, list) else []:
            if (file := stored_file(uri, task)) is not None:
                yield file


READERS: tuple[Reader, ...] = (read_predictions, read_stored_files, read_batch_manifest)


def read_all(
    values: Iterable[tuple[TaskRef, Any]],
    open_text: Callable[[str], str],
    readers: Iterable[Reader] = READERS,
) -> list[Record]:
    """Every record the readers find in the run's recorded values, in order."""
    readers = tuple(readers)
    return [record for task, value in values for reader in readers for record in reader(value, task, open_text)]


def _text(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _is_gateway_url(url: str) -> bool:
    return url[:8].lower().startswith(("http://", "https://")) or url[:11].lower().startswith("data:image/")


# --- Cards -----------------------------------------------------------------------------------

# The gateway deletes a prediction's output files about an hour after it completes (SPEC).
GATEWAY_OUTPUT_LIFETIME = timedelta(hours=1)


def parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 time from the gateway, in UTC when it names no zone; None when it is not one."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Card:
    """
    One image of the run (one output of one prediction), or one prediction with no image to show.

    ``files`` are where tasks stored it (its first is shown); ``url`` is the gateway's while it
    lasts (an ``expiring`` card); ``tasks`` are the task instances it belongs to (the one that
    made it and those that stored it).
    """

    prediction_id: str
    index: int | None
    info: PredictionInfo | None
    tasks: tuple[TaskRef, ...]
    files: tuple[StoredFile, ...] = ()
    url: str | None = None
    sidecar: StoredFile | None = None

    @property
    def key(self) -> str:
        return f"{self.prediction_id}_{self.index}" if self.index is not None else self.prediction_id

    @property
    def stored(self) -> bool:
        return bool(self.files)

    @property
    def expiring(self) -> bool:
        """Not stored: shown from the gateway's URL, until it expires (``expired``)."""
        return not self.files and self.url is not None

    @property
    def expires_at(self) -> datetime | None:
        """When the gateway deletes the output, from the prediction's completion (else creation) time."""
        if not self.expiring or self.info is None:
            return None
        ended = parse_time(self.info.completed_at) or parse_time(self.info.created_at)
        return None if ended is None else ended + GATEWAY_OUTPUT_LIFETIME

    def expired(self, now: datetime) -> bool:
        """Shown from a gateway URL that is past its lifetime: the image is gone. Unknown times never are."""
        expires_at = self.expires_at
        return expires_at is not None and now >= expires_at

    @property
    def status(self) -> str:
        if self.info is not None and self.info.status:
            return self.info.status
        return "succeeded" if self.files else "unknown"

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "canceled", "aborted")

    def file_for(self, task: TaskRef | None) -> StoredFile | None:
        """The copy that ``task`` stored, else the first copy."""
        for stored in self.files:
            if stored.task == task:
                return stored
        return self.files[0] if self.files else None

    def belongs_to(self, task_id: str, map_index: int | None) -> bool:
        return any(t.task_id == task_id and (map_index is None or t.map_index == map_index) for t in self.tasks)

    def with_info(self, info: PredictionInfo) -> Card:
        return replace(self, info=info)


def assemble(records: Iterable[Record]) -> list[Card]:
    """
    One card per output of every prediction, in the order the run made them.

    A prediction's metadata comes from the fullest record of it (a task's result over the bare
    id); an output stored by several tasks is one card with several copies; a prediction with
    neither outputs nor stored files is one card of its own (failed, running, or expired).
    """
    infos: dict[str, PredictionInfo] = {}
    files: dict[tuple[str, int], list[StoredFile]] = {}
    stored_indexes: dict[str, set[int]] = {}  # by prediction: a run of 100,000 stays linear
    sidecars: dict[str, StoredFile] = {}
    order: dict[str, int] = {}
    for record in records:
        order.setdefault(record.prediction_id, len(order))
        if isinstance(record, PredictionInfo):
            known = infos.get(record.prediction_id)
            if known is None or _fullness(record) > _fullness(known):
                infos[record.prediction_id] = record
        elif record.index is None:
            sidecars.setdefault(record.prediction_id, record)
        else:
            copies = files.setdefault((record.prediction_id, record.index), [])
            stored_indexes.setdefault(record.prediction_id, set()).add(record.index)
            if record.uri not in {copy.uri for copy in copies}:
                copies.append(record)

    cards: list[Card] = []
    for prediction_id in sorted(order, key=lambda pid: _sort_key(infos.get(pid), order[pid])):
        info = infos.get(prediction_id)
        urls = info.output_urls if info is not None and not info.data_removed else ()
        indexes = sorted(stored_indexes.get(prediction_id, set()) | set(range(len(urls))))
        sidecar = sidecars.get(prediction_id)
        if not indexes:
            tasks = _tasks(info, [], sidecar)
            cards.append(Card(prediction_id, None, info, tasks, sidecar=sidecar))
            continue
        for index in indexes:
            copies = files.get((prediction_id, index), [])
            url = urls[index] if index < len(urls) else None
            cards.append(Card(prediction_id, index, info, _tasks(info, copies, sidecar), tuple(copies), url, sidecar))
    return cards


def _fullness(info: PredictionInfo) -> tuple[bool, bool, int]:
    return (info.status is not None, info.model is not None, len(info.output_urls))


def _sort_key(info: PredictionInfo | None, seen: int) -> tuple[str, int]:
    # Creation time first (ISO 8601 sorts as text); predictions without one keep the order seen.
    return (info.created_at or "\uffff" if info is not None else "\uffff", seen)


def _tasks(
    info: PredictionInfo | None, copies: Iterable[StoredFile], sidecar: StoredFile | None
) -> tuple[TaskRef, ...]:
    tasks = [info.task] if info is not None else []
    tasks += [copy.task for copy in copies]
    if sidecar is not None:
        tasks.append(sidecar.task)
    return tuple(dict.fromkeys(tasks))


def for_task(cards: Iterable[Card], task_id: str | None, map_index: int | None) -> list[Card]:
    """The cards of one task (all its map indexes when ``map_index`` is None), or every card."""
    if task_id is None:
        return list(cards)
    return [card for card in cards if card.belongs_to(task_id, map_index)]


@dataclass(frozen=True)
class Page:
    """One page of cards: ``number`` from 1, ``count`` pages in all."""

    cards: list[Card]
    number: int
    count: int
    total: int
    size: int


DEFAULT_PAGE_SIZE = 60
MAX_PAGE_SIZE = 500


def page_of(cards: list[Card], number: int, size: int) -> Page:
    """Page ``number`` (clamped to the pages there are) of ``size`` cards (1..MAX_PAGE_SIZE)."""
    size = min(max(size, 1), MAX_PAGE_SIZE)
    count = max(1, -(-len(cards) // size))
    number = min(max(number, 1), count)
    return Page(cards[(number - 1) * size : number * size], number, count, len(cards), size)
