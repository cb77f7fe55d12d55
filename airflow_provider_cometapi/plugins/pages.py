"""
The gallery's HTML: plain server-rendered pages (no script), shown in the Images tab's frame.

Every value from a run (prompts, ids, errors) is escaped; links are built from quoted path
segments. Thumbnails load lazily (``loading="lazy"``), so a page of hundreds of images costs the
browser only the ones in view.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from itertools import islice
from typing import Any
from urllib.parse import quote, urlencode

from airflow_provider_cometapi.api import redact_url
from airflow_provider_cometapi.cost import format_amount
from airflow_provider_cometapi.plugins.records import IMAGE_EXTENSIONS, Card, Page, TaskRef

FAILED_BEFORE_RESULT = "The task failed before it recorded the prediction's result: its log says why."
# How much of a prediction's error a thumbnail shows.
CARD_ERROR_CHARS = 300


@dataclass(frozen=True)
class Links:
    """The gallery's URLs under ``root`` (the app's mount path, e.g. ``/cometapi``)."""

    root: str
    dag_id: str
    run_id: str

    def _run(self) -> str:
        return f"{self.root}/gallery/{quote(self.dag_id, safe='')}/{quote(self.run_id, safe='')}"

    def gallery(self, task_id: str | None = None, map_index: int | None = None, page: int | None = None) -> str:
        url = self._run() + (f"/{quote(task_id, safe='')}" if task_id is not None else "")
        return url + _query(map_index=map_index, page=page)

    def file(self, task: TaskRef, name: str) -> str:
        return f"{self._run()}/{quote(task.task_id, safe='')}/files/{quote(name, safe='')}" + _query(
            map_index=_mapped(task)
        )

    def view(self, task: TaskRef, key: str) -> str:
        return f"{self._run()}/{quote(task.task_id, safe='')}/view/{quote(key, safe='')}" + _query(
            map_index=_mapped(task)
        )


def _mapped(task: TaskRef) -> int | None:
    return task.map_index if task.map_index >= 0 else None


def _query(**params: Any) -> str:
    present = {key: value for key, value in params.items() if value is not None}
    return f"?{urlencode(present)}" if present else ""


# --- What a card shows --------------------------------------------------------------------------


def image_src(card: Card, links: Links, task: TaskRef | None, now: datetime) -> str | None:
    """Where the browser loads the image: a stored copy through the gallery, else the gateway (until it expires)."""
    stored = card.file_for(task)
    if stored is not None:
        return links.file(stored.task, stored.name) if _is_image(stored.name) else None
    return None if card.expired(now) else card.url


def expired_text(card: Card) -> str:
    """What an output that was never stored and whose gateway URL expired shows instead of an image."""
    when = _utc(card.expires_at) if card.expires_at is not None else "its end"
    return (
        f"The gateway's URL expired at {when}; "
        "store outputs with a destination (SavePredictionOutputsOperator) to keep them."
    )


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _is_image(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS


def card_task(card: Card, task: TaskRef | None) -> TaskRef:
    """The task instance a card's links go through: the viewed one, else the one that stored it."""
    if task is not None and task in card.tasks:
        return task
    stored = card.file_for(task)
    return stored.task if stored is not None else card.tasks[0]


def prompt(card: Card) -> str:
    value = card.info.input.get("prompt") if card.info is not None else None
    return str(value) if value not in (None, "") else ""


def size(card: Card) -> str:
    """The size asked for: width x height when given, else the aspect ratio (and megapixels)."""
    model_input: Mapping[str, Any] = card.info.input if card.info is not None else {}
    width, height = model_input.get("width"), model_input.get("height")
    if isinstance(width, int) and isinstance(height, int):
        return f"{width}\u00d7{height}"
    parts = [str(model_input[key]) for key in ("aspect_ratio", "megapixels") if model_input.get(key) is not None]
    if model_input.get("megapixels") is not None:
        parts[-1] += " MP"
    return " \u00b7 ".join(parts)


def facts(card: Card, task_states: Mapping[TaskRef, str]) -> list[tuple[str, str]]:
    """The caption's lines, label and value, in the order shown."""
    info = card.info
    model_input: Mapping[str, Any] = info.input if info is not None else {}
    seed = model_input.get("seed")
    return [
        ("Model", (info.model if info else None) or "\u2014"),
        ("Seed", "\u2014" if seed is None else str(seed)),
        ("Size", size(card) or "\u2014"),
        ("Status", status(card, task_states)),
        ("Created", _created(info.created_at if info else None)),
        ("Cost", _cost(info.cost if info else None, info.currency if info else None)),
    ]


def status(card: Card, task_states: Mapping[TaskRef, str]) -> str:
    if card.info is not None and card.info.status:
        return card.info.status
    if card.stored:
        return "succeeded"
    states = {task_states.get(task) for task in card.tasks}
    if "failed" in states or "upstream_failed" in states:
        return "failed"
    return "running" if states & {"running", "deferred", "queued", "scheduled", "up_for_retry"} else "unknown"


def error(card: Card, task_states: Mapping[TaskRef, str]) -> str | None:
    """Why a card has no image: the prediction's error, or what is known of it."""
    if card.info is not None and card.info.error:
        return card.info.error
    state = status(card, task_states)
    if state in ("failed", "canceled", "aborted"):
        return FAILED_BEFORE_RESULT if card.info is None or card.info.status is None else f"The prediction {state}."
    if card.index is None:
        if card.info is not None and card.info.data_removed:
            return "Its outputs expired before they were stored."
        return "No output yet." if state == "running" else "No output was recorded."
    return None


def _created(value: str | None) -> str:
    if not value:
        return "\u2014"
    # ISO 8601 from the gateway: shown to the second, in its own zone, as Airflow shows UTC.
    return value.replace("T", " ")[:19] + (" UTC" if value.endswith(("Z", "+00:00")) else "")


def _cost(value: float | None, currency: str | None) -> str:
    # Unknown (no price for the model in the connection) is a dash, never a guess.
    return "\u2014" if value is None else f"{format_amount(value)} {currency or ''}".rstrip()


# --- Pages ---------------------------------------------------------------------------------------

_STYLE = """
:root { color-scheme: light dark; --bg: #fff; --fg: #1a202c; --muted: #5f6b7a; --line: #e2e8f0;
  --card: #f8fafc; --bad: #c53030; --warn: #b7791f; --ok: #2f855a; }
@media (prefers-color-scheme: dark) { :root { --bg: #0f1419; --fg: #e2e8f0; --muted: #a0aec0;
  --line: #2d3748; --card: #1a202c; --bad: #fc8181; --warn: #f6ad55; --ok: #68d391; } }
* { box-sizing: border-box; }
body { margin: 0; padding: 16px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  background: var(--bg); color: var(--fg); }
h1 { font-size: 18px; margin: 0 0 4px; } .summary { color: var(--muted); margin: 0 0 16px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 16px; }
figure { margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  overflow: hidden; display: flex; flex-direction: column; }
figure a.image { display: block; aspect-ratio: 1 / 1; background: var(--line); }
figure img { width: 100%; height: 100%; object-fit: contain; display: block; }
.noimage { aspect-ratio: 1 / 1; padding: 16px; display: flex; align-items: center; justify-content: center;
  text-align: center; color: var(--bad); background: var(--line); overflow: auto; }
figcaption { padding: 8px 10px 10px; }
.prompt { margin: 0 0 6px; font-weight: 600; overflow-wrap: anywhere; }
dl { display: grid; grid-template-columns: auto 1fr; gap: 1px 8px; margin: 0; font-size: 12px; }
dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
.badge { display: inline-block; font-size: 11px; padding: 0 6px; border-radius: 9px; margin-top: 6px;
  border: 1px solid currentColor; }
.expiring { color: var(--warn); } .stored { color: var(--ok); } .failed { color: var(--bad); }
nav.pages { margin: 16px 0; display: flex; gap: 12px; align-items: center; }
a { color: inherit; } .empty { color: var(--muted); }
.full img { max-width: 100%; max-height: 80vh; display: block; margin: 8px 0 16px; }
table { border-collapse: collapse; } td, th { text-align: left; padding: 2px 12px 2px 0; vertical-align: top; }
th { color: var(--muted); font-weight: normal; }
"""


def _document(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def gallery_page(
    page: Page,
    links: Links,
    task_states: Mapping[TaskRef, str],
    *,
    task_id: str | None = None,
    map_index: int | None = None,
    now: datetime | None = None,
) -> str:
    """The thumbnail grid of one page of cards; outputs shown from the gateway are expired by ``now``."""
    now = now or datetime.now(UTC)
    viewed = TaskRef(task_id, -1 if map_index is None else map_index) if task_id is not None else None
    where = links.run_id if task_id is None else f"{task_id}" + (f" [{map_index}]" if map_index is not None else "")
    expired = sum(card.expired(now) for card in page.cards)
    expiring = sum(card.expiring for card in page.cards) - expired
    summary = _summary(page, expiring, expired)
    cards = "".join(_card(card, links, viewed, task_states, now) for card in page.cards)
    grid = f'<div class="grid">{cards}</div>' if cards else '<p class="empty">This run recorded no images here.</p>'
    return _document(
        f"Images of {where}",
        f"<h1>Images of {escape(where)}</h1><p class=summary>{summary}</p>{grid}"
        + _pager(page, links, task_id, map_index),
    )


def _summary(page: Page, expiring: int, expired: int) -> str:
    total = f"{page.total} image{'s' if page.total != 1 else ''}"
    shown = f"; page {page.number} of {page.count}" if page.count > 1 else ""
    extra = f"; {expiring} on this page not stored yet, shown from the gateway while its URLs last" if expiring else ""
    gone = f"; {expired} on this page never stored, their gateway URLs expired" if expired else ""
    return escape(f"{total}{shown}{extra}{gone}.")


def _pager(page: Page, links: Links, task_id: str | None, map_index: int | None) -> str:
    if page.count <= 1:
        return ""
    parts = []
    if page.number > 1:
        parts.append(f'<a rel="prev" href="{escape(links.gallery(task_id, map_index, page.number - 1))}">Previous</a>')
    parts.append(f"<span>Page {page.number} of {page.count}</span>")
    if page.number < page.count:
        parts.append(f'<a rel="next" href="{escape(links.gallery(task_id, map_index, page.number + 1))}">Next</a>')
    return f'<nav class="pages">{"".join(parts)}</nav>'


def _card(card: Card, links: Links, viewed: TaskRef | None, task_states: Mapping[TaskRef, str], now: datetime) -> str:
    task = card_task(card, viewed)
    text = prompt(card)
    src = image_src(card, links, viewed, now)
    problem = expired_text(card) if card.expired(now) else error(card, task_states)
    view = escape(links.view(task, card.key))
    if src is not None and not card.failed:
        picture = (
            f'<a class="image" href="{view}" title="Open the full image">'
            f'<img src="{escape(src)}" alt="{escape(text or card.key)}" loading="lazy" decoding="async"></a>'
        )
    else:
        # The gateway's error may be long: the card shows its start, the full view all that was kept.
        shown = _cut(problem or "No image to show.", CARD_ERROR_CHARS)
        picture = f'<a class="noimage" href="{view}">{escape(shown)}</a>'
    badge = (
        '<span class="badge stored">stored</span>'
        if card.stored
        else '<span class="badge failed">expired: not stored</span>'
        if card.expired(now)
        else f'<span class="badge expiring" title="{escape(_deleted_when(card))}">expiring: not stored</span>'
        if card.expiring
        else '<span class="badge failed">no image</span>'
    )
    rows = "".join(f"<dt>{escape(label)}</dt><dd>{escape(value)}</dd>" for label, value in facts(card, task_states))
    index = "" if card.index is None else card.index
    return (
        f'<figure data-prediction="{escape(card.prediction_id)}" data-index="{index}"'
        f' data-task="{escape(task.task_id)}" data-map-index="{task.map_index}">'
        f'{picture}<figcaption><p class="prompt">{escape(text) or "(no prompt)"}</p><dl>{rows}</dl>{badge}'
        "</figcaption></figure>"
    )


def _deleted_when(card: Card) -> str:
    if card.expires_at is None:
        return "The gateway deletes outputs about an hour after the prediction"
    return f"The gateway deletes it at about {_utc(card.expires_at)}"


def view_page(
    card: Card, links: Links, task: TaskRef, task_states: Mapping[TaskRef, str], now: datetime | None = None
) -> str:
    """One image at full size, with everything known about it."""
    now = now or datetime.now(UTC)
    src = image_src(card, links, task, now)
    problem = expired_text(card) if card.expired(now) else error(card, task_states)
    text = prompt(card)
    picture = (
        f'<a href="{escape(src)}"><img src="{escape(src)}" alt="{escape(text or card.key)}"></a>'
        if src is not None and not card.failed
        else f'<p class="failed">{escape(problem or "No image to show.")}</p>'
    )
    rows: list[tuple[str, str]] = [("Prompt", text or "(no prompt)"), *facts(card, task_states)]
    rows += [("Prediction", card.prediction_id), ("Output", "" if card.index is None else str(card.index))]
    rows += [("Task", _task_label(t)) for t in card.tasks]
    rows += [("Stored at", _location(stored.uri)) for stored in card.files]
    if card.expired(now):
        rows.append(("Stored at", f"not stored: {expired_text(card)}"))
    elif card.expiring:
        rows.append(("Stored at", f"not stored: shown from the gateway. {_deleted_when(card)}."))
    if card.info is not None:
        rows += [(f"input.{key}", input_value(value)) for key, value in card.info.input.items() if key != "prompt"]
    table = "".join(f"<tr><th>{escape(label)}</th><td>{escape(value)}</td></tr>" for label, value in rows)
    back = escape(links.gallery(task.task_id, _mapped(task)))
    run = escape(links.gallery())
    return _document(
        f"{card.key}",
        f'<p><a href="{back}">\u2190 Images of {escape(_task_label(task))}</a> \u00b7 '
        f'<a href="{run}">all images of the run</a></p>'
        f'<div class="full">{picture}</div><table>{table}</table>',
    )


def _task_label(task: TaskRef) -> str:
    return task.task_id + (f" [{task.map_index}]" if task.map_index >= 0 else "")


def _location(uri: str) -> str:
    # Without user info: a URI may carry a connection id or, if misused, a credential.
    return redact_url(uri) if "://" in uri else uri


# A URL in an input value (an input image's): its query may be a signature or a token.
_URL = re.compile(r"\b(?:[a-z][a-z0-9+.-]*://|data:)[^\s\"'<>]*", re.IGNORECASE | re.ASCII)
# Of a long list or dict, the full view shows the first items (and cuts the text anyway).
_SHOWN_ITEMS = 50


def input_value(value: Any, limit: int = 300) -> str:
    """An input value as the full view shows it: URLs, also in lists and dicts, as ``redact_url`` shows them; cut."""
    redacted = _redact_urls(value)
    return _cut(redacted if isinstance(redacted, str) else repr(redacted), limit)


def _redact_urls(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return _URL.sub(lambda url: redact_url(url.group()), value)
    if depth >= 4:
        return value if isinstance(value, int | float | bool) or value is None else "\u2026"
    if isinstance(value, Mapping):
        return {key: _redact_urls(item, depth + 1) for key, item in islice(value.items(), _SHOWN_ITEMS)}
    if isinstance(value, list | tuple):
        return [_redact_urls(item, depth + 1) for item in value[:_SHOWN_ITEMS]] + (
            ["\u2026"] if len(value) > _SHOWN_ITEMS else []
        )
    return value


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "\u2026"


def error_page(title: str, message: str) -> str:
    return _document(title, f"<h1>{escape(title)}</h1><p>{escape(message)}</p>")
