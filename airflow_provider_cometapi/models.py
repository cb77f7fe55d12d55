"""
The prediction as the rest of the provider speaks of it, and what a valid request looks like.

One place for the statuses and the terminal set, the parsing of the API's JSON (``output``
normalised to a list of strings), model and prediction ids, and the local check of the
FLUX input fields that the gateway would otherwise reject with HTTP 422 (after a round trip).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

from airflow_provider_cometapi.exceptions import (
    GatewayResponseError,
    InvalidInputError,
    InvalidModelIdError,
    InvalidPredictionIdError,
    UnexpectedPredictionError,
)


class PredictionStatus(str, Enum):
    """The statuses the API documents. Others may appear and are treated as still running."""

    STARTING = "starting"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    ABORTED = "aborted"

    def __str__(self) -> str:
        return self.value


TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "canceled", "aborted"})
UNSUCCESSFUL_STATUSES: frozenset[str] = TERMINAL_STATUSES - {"succeeded"}
KNOWN_STATUSES: frozenset[str] = frozenset(status.value for status in PredictionStatus)

# Fields that can be large and that the task log already showed: kept out of XCom and events.
_BULKY_FIELDS = ("logs",)
_DATA_URI_PREVIEW = 48
# Of a prediction's log only the newest part is kept, and a poll logs at most so many lines: a
# gateway answering megabytes of log must not flood memory or the task log.
MAX_LOG_CHARS = 64 * 1024
MAX_LOG_LINES = 200
_MAX_ERROR_CHARS = 2000


class NewLogLines(NamedTuple):
    """What a poll adds to the prediction's log, and how much of it was left out."""

    lines: list[str]
    offset: int
    dropped_chars: int = 0
    dropped_lines: int = 0


@dataclass(frozen=True)
class Prediction:
    """
    A prediction as returned by the API.

    ``status`` is the raw string, so a status this release does not know survives a round trip;
    ``output`` is always a list of URLs (or ``data:`` URIs), empty until the prediction succeeds
    or once its files expired. ``raw`` keeps every field the API sent except the log.
    ``id`` is always a valid prediction id, so it is safe in URLs and file names. ``logs`` is
    the newest ``MAX_LOG_CHARS`` of the log, ``logs_length`` the length of the whole.
    """

    id: str
    status: str
    model: str | None = None
    output: list[str] = field(default_factory=list)
    error: str | None = None
    logs: str = ""
    data_removed: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    logs_length: int = -1

    def __post_init__(self) -> None:
        if self.logs_length < len(self.logs):
            object.__setattr__(self, "logs_length", len(self.logs))

    @classmethod
    def from_api(cls, data: Any, *, expected_id: str | None = None) -> Prediction:
        """
        Build a prediction from the API's JSON; a body that is not one is a gateway error.

        :param expected_id: the id asked for: an answer about another prediction is refused.
        :raises UnexpectedPredictionError: the answered id is not an id, or not ``expected_id``.
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), str) or not data["id"]:
            raise GatewayResponseError(
                "CometAPI answered with JSON that is not a prediction (no 'id'). This is a gateway fault; retry later.",
                status_code=200,
            )
        answered = data["id"]
        if not _PREDICTION_ID.fullmatch(answered) or (expected_id is not None and answered != expected_id):
            asked = f" for prediction {expected_id!r}" if expected_id is not None else ""
            raise UnexpectedPredictionError(
                f"CometAPI answered{asked} with the prediction id {answered[:80]!r}, which "
                f"{'is not the one asked for' if _PREDICTION_ID.fullmatch(answered) else 'is not a valid id'}; "
                "the answer was not used. This is a gateway fault: report it to CometAPI.",
                status_code=200,
            )
        status, model, error, logs = data.get("status"), data.get("model"), data.get("error"), data.get("logs")
        logs = logs if isinstance(logs, str) else ""
        return cls(
            id=answered,
            status=status[:40] if isinstance(status, str) and status else "unknown",
            model=model[:200] if isinstance(model, str) else None,
            output=normalise_output(data.get("output")),
            error=None if error in (None, "") else str(error)[:_MAX_ERROR_CHARS],
            logs=logs[-MAX_LOG_CHARS:],
            data_removed=data.get("data_removed") is True or data.get("data_removed") == "true",
            # Copied only when there is a log to leave out (a poll's answer is ours to keep).
            raw={key: value for key, value in data.items() if key not in _BULKY_FIELDS} if "logs" in data else data,
            logs_length=len(logs),
        )

    @property
    def is_terminal(self) -> bool:
        """True once the status is ``succeeded``, ``failed``, ``canceled`` or ``aborted``."""
        return self.status in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        """True when the status is ``succeeded``."""
        return self.status == PredictionStatus.SUCCEEDED

    @property
    def is_known_status(self) -> bool:
        return self.status in KNOWN_STATUSES

    def new_log_lines(self, seen_chars: int) -> NewLogLines:
        """
        The complete log lines written since ``seen_chars``, the new offset, and what was dropped.

        Offsets count characters of the whole log, of which ``logs`` is the newest part. Logs
        only grow, so a poller keeps one integer instead of the whole log. A trailing partial
        line is left for the next poll, unless the prediction has ended; a shorter log
        (rewritten) starts over. At most ``MAX_LOG_LINES`` lines come back, the newest; the
        counts say how much was left out, so the caller can say so in one line.
        """
        if self.logs_length < seen_chars:
            seen_chars = 0
        kept_from = self.logs_length - len(self.logs)
        start = max(seen_chars, kept_from) - kept_from
        dropped_chars = max(0, kept_from - seen_chars)
        if dropped_chars:
            # The kept part may begin mid-line: that line's start is gone, so it is dropped whole.
            first_break = self.logs.find("\n", start)
            dropped_chars += (first_break + 1 - start) if first_break >= 0 else 0
            start = first_break + 1 if first_break >= 0 else start
        end = len(self.logs) if self.is_terminal else self.logs.rfind("\n", start) + 1
        if end <= start:
            return NewLogLines([], max(seen_chars, kept_from + start), dropped_chars)
        lines = [line.rstrip("\r") for line in self.logs[start:end].splitlines()]
        lines = [line for line in lines if line.strip()]
        dropped_lines = max(0, len(lines) - MAX_LOG_LINES)
        return NewLogLines(lines[dropped_lines:], kept_from + end, dropped_chars, dropped_lines)

    @property
    def has_inline_outputs(self) -> bool:
        """True when some output is a ``data:`` URI (the whole file inline, possibly megabytes)."""
        return any(url.startswith("data:") for url in self.output)

    def to_dict(self, *, shorten_outputs: bool = False) -> dict[str, Any]:
        """
        The prediction as a small JSON dict for XCom and trigger events.

        Every API field is kept, except the logs (streamed to the task log already), with
        ``output`` as a list and ``data:`` URIs in ``input`` shortened to a preview; with
        ``shorten_outputs``, ``data:`` outputs too (a trigger event must stay small).
        """
        result = {key: value for key, value in self.raw.items() if key not in _BULKY_FIELDS}
        output = [_preview(url) for url in self.output] if shorten_outputs else list(self.output)
        result.update(id=self.id, status=self.status, output=output, error=self.error)
        if isinstance(result.get("input"), Mapping):
            result["input"] = {key: _preview(value) for key, value in result["input"].items()}
        return result


def normalise_output(output: Any) -> list[str]:
    """``None`` -> ``[]``, a single URL -> ``[url]``, a list -> its strings."""
    if output is None:
        return []
    if isinstance(output, str):
        return [output] if output else []
    if isinstance(output, list | tuple):
        return [item for item in output if isinstance(item, str) and item]
    return []


def _preview(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("data:") and len(value) > _DATA_URI_PREVIEW:
        return f"{value[:_DATA_URI_PREVIEW]}...({len(value)} chars)"
    return value


# --- Ids ------------------------------------------------------------------------------------

_MODEL_ID = re.compile(r"^(?P<owner>[A-Za-z0-9][\w.-]*)/(?P<name>[A-Za-z0-9][\w.-]*)(?::(?P<version>[\w.-]+))?$")
# ASCII only (re.ASCII): an id becomes a URL segment and a file name.
_PREDICTION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$", re.ASCII)


@dataclass(frozen=True)
class ModelId:
    """A model id ``owner/name`` with an optional ``:version``."""

    owner: str
    name: str
    version: str | None = None

    @classmethod
    def parse(cls, model: Any) -> ModelId:
        match = _MODEL_ID.match(model.strip()) if isinstance(model, str) else None
        if match is None:
            raise InvalidModelIdError(
                f"Invalid model id {model!r}: expected 'owner/name' or 'owner/name:version', "
                "for example 'black-forest-labs/flux-schnell'."
            )
        return cls(match["owner"], match["name"], match["version"])

    @property
    def slug(self) -> str:
        """``owner/name``, as the gateway names the model."""
        return f"{self.owner}/{self.name}"

    def __str__(self) -> str:
        return f"{self.slug}:{self.version}" if self.version else self.slug


def check_prediction_id(prediction_id: Any) -> str:
    """Return the id stripped, or raise before any request for one that cannot be valid."""
    if isinstance(prediction_id, str) and _PREDICTION_ID.fullmatch(prediction_id.strip()):
        return prediction_id.strip()
    shown = prediction_id[:80] if isinstance(prediction_id, str) else prediction_id
    raise InvalidPredictionIdError(
        f"Invalid prediction id {shown!r}: ids are up to 128 letters, digits, '-' and '_', "
        "as returned in the 'id' of a created prediction (XCom key 'prediction_id')."
    )


# --- Local check of the FLUX inputs ---------------------------------------------------------

ASPECT_RATIOS: tuple[str, ...] = (
    "1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21",
)  # fmt: skip
OUTPUT_FORMATS: tuple[str, ...] = ("webp", "png", "jpg", "jpeg")


def is_flux_model(model: ModelId) -> bool:
    return model.owner == "black-forest-labs" and model.name.startswith("flux")


def validate_input(model: ModelId, model_input: Any) -> dict[str, Any]:
    """
    Check the fields every FLUX model shares, the way the gateway would, and return the input.

    Only FLUX models are checked; other models and unknown keys pass through unchanged.
    Raises ``InvalidInputError`` naming each bad field, before any request is made.
    """
    if not isinstance(model_input, Mapping):
        raise InvalidInputError(
            f"The input for {model} must be a mapping such as {{'prompt': '...'}}, got {type(model_input).__name__}."
        )
    checked: dict[str, Any] = dict(model_input)
    not_json = _first_non_json(checked, "input")
    if not_json is not None:
        where, value = not_json
        raise InvalidInputError(
            f"Invalid input for {model}: {where} is {_describe(value)}, which JSON cannot carry. Use strings, "
            "finite numbers, booleans, null, lists and mappings with string keys.",
            invalid_fields=[{"field": where, "description": f"{_describe(value)} is not JSON"}],
        )
    if not is_flux_model(model):
        return checked
    problems: list[dict[str, str]] = []

    def bad(name: str, description: str) -> None:
        problems.append({"field": f"input.{name}", "description": description})

    prompt = checked.get("prompt")
    # Redux models vary an image (redux_image) and take no prompt.
    if "redux" not in model.name and (not isinstance(prompt, str) or not prompt.strip()):
        bad("prompt", "a non-empty text prompt is required")
    ratios = ASPECT_RATIOS + (("match_input_image",) if "kontext" in model.name else ())
    if "aspect_ratio" in checked and checked["aspect_ratio"] not in ratios:
        bad("aspect_ratio", f"{checked['aspect_ratio']!r} is not one of {', '.join(ratios)}")
    if "output_format" in checked and checked["output_format"] not in OUTPUT_FORMATS:
        bad("output_format", f"{checked['output_format']!r} is not one of {', '.join(OUTPUT_FORMATS)}")
    if "output_quality" in checked and not _is_int_between(checked["output_quality"], 1, 100):
        bad("output_quality", f"{checked['output_quality']!r} is not a whole number from 1 to 100")
    if "num_outputs" in checked and not _is_int_between(checked["num_outputs"], 1, 4):
        bad("num_outputs", f"{checked['num_outputs']!r} is not a whole number from 1 to 4")
    if "seed" in checked and not _is_int_between(checked["seed"], 0, 2**63 - 1):
        bad("seed", f"{checked['seed']!r} is not a non-negative whole number")
    if problems:
        listing = "; ".join(f"{p['field']}: {p['description']}" for p in problems)
        raise InvalidInputError(
            f"Invalid input for {model}: {listing}. Fix these fields in the operator's `input`.",
            invalid_fields=problems,
        )
    return checked


_MAX_INPUT_DEPTH = 32


def _first_non_json(value: Any, where: str, depth: int = 0) -> tuple[str, Any] | None:
    """The first place in ``value`` that JSON cannot carry faithfully, with what is there."""
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (where, value)
    if depth >= _MAX_INPUT_DEPTH:
        return where, value
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} key {key!r}", key
            found = _first_non_json(item, f"{where}.{key}", depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _first_non_json(item, f"{where}[{index}]", depth + 1)
            if found is not None:
                return found
        return None
    return where, value


def _describe(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Mapping | list | tuple):
        return f"nested deeper than {_MAX_INPUT_DEPTH} levels"
    return f"a {type(value).__name__}"


def _is_int_between(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
