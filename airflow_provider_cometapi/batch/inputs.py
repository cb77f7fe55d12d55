"""
A batch's inputs: a list, or a JSON Lines file in any object storage, every one checked locally
(``models.validate_input``, as the create operator checks one) before anything is created.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from airflow_provider_cometapi.exceptions import BatchInputError, InvalidInputError
from airflow_provider_cometapi.models import ModelId, validate_input

MAX_INPUTS = 100_000
MAX_LINE_BYTES = 16 * 1024 * 1024
# A message lists this many bad inputs at most, and says how many more there were.
_LISTED = 10


@dataclass(frozen=True)
class BatchInput:
    """One checked input: its place in the batch, its line in the file (1-based), and itself."""

    index: int
    line: int | None
    input: dict[str, Any]


def load_inputs(inputs: Any, model: ModelId) -> list[BatchInput]:
    """
    Every input of the batch, checked.

    :param inputs: a list of input mappings (a string means ``{"prompt": s}``), or the URI (or
        ``ObjectStoragePath``) of a JSON Lines file with one input (an object or a string) per line.
    :raises BatchInputError: a bad input or line (up to ten named by index and line), a file that
        cannot be read, or more than ``MAX_INPUTS`` inputs; before any request.
    """
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    if isinstance(inputs, str | PurePath | ObjectStoragePath):
        source = f"the inputs file {inputs}"
        items = _read_lines(inputs)
    elif isinstance(inputs, list | tuple):
        source = "the inputs"
        items = ((None, item, None) for item in inputs)
    else:
        raise BatchInputError(
            f"inputs must be a list of inputs (mappings, or strings meaning {{'prompt': s}}) or the URI of a JSON "
            f"Lines file, got {type(inputs).__name__} {repr(inputs)[:80]}.",
            index=None,
        )
    checked: list[BatchInput] = []
    problems: list[tuple[int, int | None, str]] = []
    fields: list[dict[str, Any]] = []
    for line, item, unreadable in items:
        index = len(checked) + len(problems)
        if index >= MAX_INPUTS:
            raise BatchInputError(
                f"{source[0].upper()}{source[1:]} holds more than {MAX_INPUTS:,} inputs. Split it into several "
                "batches (several tasks, or a mapped batch task).",
                index=None,
            )
        try:
            if unreadable is not None:
                raise InvalidInputError(unreadable)
            model_input = {"prompt": item} if isinstance(item, str) else item
            checked.append(BatchInput(index, line, validate_input(model, model_input)))
        except InvalidInputError as error:
            problems.append((index, line, str(error)))
            fields.extend({**field, "index": index} for field in error.invalid_fields)
    if problems:
        raise _bad_inputs(source, problems, fields)
    return checked


def _read_lines(uri: Any) -> Iterable[tuple[int | None, Any, str | None]]:
    """(line number, parsed JSON, why it cannot be read) per non-blank line."""
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    try:
        path = uri if isinstance(uri, ObjectStoragePath) else ObjectStoragePath(str(uri))
        with path.open("rb") as handle:
            lines = list(_bounded(handle))
    except (OSError, ValueError, ImportError) as error:
        raise BatchInputError(
            f"Cannot read the inputs file {uri}: {error}. Give the URI of a JSON Lines file the worker can read "
            "(for example 's3://aws_default@bucket/prompts.jsonl' or 'file:///data/prompts.jsonl'), or a list.",
            index=None,
        ) from error
    for number, raw in lines:
        if raw is None:
            yield number, None, f"the line is longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB"
            continue
        text = raw.decode("utf-8", errors="replace").strip()
        if not text:
            continue
        try:
            yield number, json.loads(text), None
        except ValueError as error:
            yield number, None, f"the line is not JSON ({error}); write one JSON object or string per line"


def _bounded(handle: Any) -> Iterable[tuple[int, bytes | None]]:
    for number, raw in enumerate(handle, start=1):
        yield number, None if len(raw) > MAX_LINE_BYTES else raw
        if number > 2 * MAX_INPUTS:
            return


def _bad_inputs(
    source: str, problems: list[tuple[int, int | None, str]], fields: list[dict[str, Any]]
) -> BatchInputError:
    def where(index: int, line: int | None) -> str:
        return f"input {index}" + (f" (line {line})" if line is not None else "")

    listed = "; ".join(f"{where(index, line)}: {message}" for index, line, message in problems[:_LISTED])
    more = f"; and {len(problems) - _LISTED:,} more" if len(problems) > _LISTED else ""
    first_index, first_line, _ = problems[0]
    return BatchInputError(
        f"{len(problems):,} of the inputs in {source} cannot be sent, so nothing was created. {listed}{more}",
        index=first_index,
        line=first_line,
        invalid_fields=fields,
    )
