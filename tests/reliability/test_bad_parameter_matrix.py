"""
The bad-parameter matrix: arguments and connection values that cannot work, and their one error.

Each row fails with a ``CometAPIError`` subclass (never a raw ``TypeError``, ``AttributeError``
or ``UnicodeEncodeError``) whose message names the parameter to fix, and fails before any
request: the emulator sees no request at all, so nothing is created, billed or cancelled.
Arguments that are not templated fail when the operator is built, that is when the DAG is
parsed; templated ones (``input``, ``destination``) may fail when the task starts, still before
any request. A key with control or non-latin-1 characters never appears in a message or a log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_cometapi.emulator.testing import EmulatorProcess
from airflow_provider_cometapi.exceptions import CometAPIConfigurationError, CometAPIError, InvalidInputError
from airflow_provider_cometapi.operators.prediction import CreatePredictionOperator
from airflow_provider_cometapi.operators.storage import SavePredictionOutputsOperator
from airflow_provider_cometapi.triggers.prediction import PredictionTrigger
from tests.fixtures import TaskInstance, set_connection

# The classes issue 13 adds; until they land on main this module fails to import, by design.
from airflow_provider_cometapi.exceptions import InvalidDestinationError, InvalidParameterError  # isort: skip

SCHNELL = "black-forest-labs/flux-schnell"
OTHER_MODEL = "acme/upscaler"  # not a FLUX model: its input is not checked field by field, but must be JSON
PREDICTION = "abcdefghijklmnopqrstuvwxyz"
NAN, INF = math.nan, math.inf


@dataclass(frozen=True)
class Row:
    name: str
    build: Callable[[Path], Any]  # the operator or trigger, as a DAG file (or a deferral) builds it
    run: Callable[[Any], Any]  # what the task then does with it
    error: type[CometAPIError]
    says: tuple[str, ...]  # the parameter (and the fix) as the message must name them
    at_parse: bool = False  # must already fail in ``build``
    connection: dict[str, Any] = field(default_factory=dict)  # overrides of the emulator's connection
    secret: str = ""  # must appear in no message and no log


def generate(**kwargs: Any) -> Callable[[Path], CreatePredictionOperator]:
    kwargs.setdefault("model", SCHNELL)
    kwargs.setdefault("input", {"prompt": "a careful fox"})
    kwargs.setdefault("poll_interval", 0.1)
    return lambda tmp_path: CreatePredictionOperator(task_id="generate", deferrable=False, **kwargs)


def execute(task: Any) -> Any:
    return task.execute({"ti": TaskInstance()})


def store(destination: Any) -> Callable[[Path], SavePredictionOutputsOperator]:
    """The storage operator; ``destination`` may be a function of the test's folder."""
    return lambda tmp_path: SavePredictionOutputsOperator(
        task_id="store",
        prediction_id=PREDICTION,
        destination=destination(tmp_path) if callable(destination) else destination,
    )


def trigger(**kwargs: Any) -> Callable[[Path], PredictionTrigger]:
    return lambda tmp_path: PredictionTrigger(PREDICTION, deadline=time.time() + 5, **kwargs)


def first_event(task: PredictionTrigger) -> Any:
    async def run() -> Any:
        async for event in task.run():
            return event.payload
        return None

    return asyncio.run(asyncio.wait_for(run(), 10))


def model_input(**values: Any) -> dict[str, Any]:
    return {"prompt": "a careful fox", **values}


ROWS = [
    *(
        Row(f"timeout={value!r}", generate(timeout=value), execute, InvalidParameterError, ("timeout",), at_parse=True)
        for value in (0, -5, timedelta(seconds=-1), timedelta(0), NAN, INF)
    ),
    *(
        Row(
            f"poll_interval={value!r}",
            generate(poll_interval=value),
            execute,
            InvalidParameterError,
            ("poll_interval",),
            at_parse=True,
        )
        for value in (0, -1, NAN, INF)
    ),
    *(
        Row(
            f"prefer_wait={value!r}",
            generate(prefer_wait=value),
            execute,
            InvalidParameterError,
            ("prefer_wait", "60"),
            at_parse=True,
        )
        for value in (0, 61, 1.5, True)
    ),
    *(
        Row(
            f"trigger poll_interval={value!r}",
            trigger(poll_interval=value),
            first_event,
            InvalidParameterError,
            ("poll_interval",),
            at_parse=True,
        )
        for value in (0, -1, NAN, INF)
    ),
    *(
        Row(f"destination={value!r}", store(value), execute, InvalidDestinationError, ("destination",))
        for value in ("", "   ", "relative/dir", 42, None, "memory://x", "memory:///images")
    ),
    Row(
        "input value that is a set",
        generate(input=model_input(tags={"fox", "forest"})),
        execute,
        InvalidInputError,
        ("tags",),
    ),
    Row(
        "input value that is bytes, for a model not checked field by field",
        generate(model=OTHER_MODEL, input={"image": b"\x89PNG\r\n"}),
        execute,
        InvalidInputError,
        ("image",),
    ),
    Row(
        "input value that is an object, nested",
        generate(input=model_input(options={"sampler": object()})),
        execute,
        InvalidInputError,
        ("sampler",),
    ),
    Row("input value NaN", generate(input=model_input(guidance=NAN)), execute, InvalidInputError, ("guidance",)),
    Row("input value inf", generate(input=model_input(megapixels=INF)), execute, InvalidInputError, ("megapixels",)),
    Row(
        "input value -inf in a list, for a model not checked field by field",
        generate(model=OTHER_MODEL, input={"weights": [1.0, -INF]}),
        execute,
        InvalidInputError,
        ("weights",),
    ),
    *(
        Row(
            f"connection extra {name}={value!r}",
            store(lambda tmp_path: (tmp_path / "images").as_uri()),
            execute,
            CometAPIConfigurationError,
            (name,),
            connection={"extra": {name: value}},
        )
        for name, value in (
            ("max_output_bytes", 0),
            ("max_output_bytes", -1),
            ("max_output_bytes", "lots"),
            ("max_output_bytes", "nan"),
            ("timeout", "nan"),
            ("timeout", "inf"),
            ("connect_timeout", "inf"),
        )
    ),
]

# Keys a platform team can paste by mistake: a header injection, a stray newline, a NUL, and
# characters an HTTP header cannot carry (not latin-1).
BAD_KEYS = {
    "CR/LF": "sk-crlf-5e1d9a7c3b20\r\nX-Injected: yes",
    "LF": "sk-lf-77a2c4e6f810\nsk-second-line-3f9a",
    "NUL": "sk-nul-0c3b5d7f9e11\x00tail",
    "tab": "sk-tab-91fe2b4d6c80\tmore",
    "Cyrillic": "sk-ключ-4d2a6c8e0f13",
    "emoji": "sk-key-\U0001f511-8b6c0d2e4f57",
}
KEY_PLACES: dict[str, tuple[Callable[[Path], Any], Callable[[Any], Any]]] = {
    "create": (generate(), execute),
    "store": (store(lambda tmp_path: (tmp_path / "images").as_uri()), execute),
}
ROWS += [
    Row(
        f"API key with {kind} [{place}]",
        *KEY_PLACES[place],
        CometAPIConfigurationError,
        ("cometapi_default",),
        connection={"password": key},
        secret=key,
    )
    for kind, key in BAD_KEYS.items()
    for place in KEY_PLACES
]


def secret_forms(secret: str) -> set[str]:
    """The key as it would leak: whole, escaped by repr or JSON, or any long piece of it (a line, a word)."""
    forms = {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    return forms | {piece for piece in re.findall(r"[\w-]+", secret) if len(piece) >= 12}


def assert_secret_kept(secret: str, *texts: str) -> None:
    for form in secret_forms(secret) if secret else []:
        for text in texts:
            assert form not in text, f"the key ({form!r}) leaked: {text[:300]!r}"


@pytest.mark.timeout(20)
@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_bad_parameter(
    row: Row,
    emulator: EmulatorProcess,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd,
) -> None:
    set_connection(monkeypatch, {**emulator.connection_dict(), **row.connection})
    monkeypatch.chdir(tmp_path)  # a relative destination must not land in the repository either
    built: Any = None
    with caplog.at_level(logging.INFO), pytest.raises(Exception) as raised:
        built = row.build(tmp_path)
        row.run(built)
    error = raised.value
    assert isinstance(error, CometAPIError), f"a raw {type(error).__name__} reached the DAG author: {error}"
    assert isinstance(error, row.error), f"expected {row.error.__name__}, got {type(error).__name__}: {error}"
    if row.at_parse:
        assert built is None, "an argument that cannot work must fail when the DAG is parsed"
    message = str(error)
    for piece in row.says:
        assert piece in message, f"{piece!r} not in {message!r}"
    assert "may have been created" not in message, "nothing was sent: nothing can have been created"
    captured = capfd.readouterr()
    assert_secret_kept(row.secret, message, repr(error), caplog.text, captured.out, captured.err)
    stats = emulator.stats(detail=False)
    assert stats["creates"] == 0, "a bad parameter must create nothing"
    assert stats["requests"] == 0, "a bad parameter must fail before any request"
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert not written, f"nothing may be written: {written}"


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", list(BAD_KEYS))
def test_a_bad_key_in_the_triggerer_is_an_error_event_without_the_key(
    kind: str, emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd
) -> None:
    key = BAD_KEYS[kind]
    set_connection(monkeypatch, {**emulator.connection_dict(), "password": key})
    with caplog.at_level(logging.INFO):
        event = first_event(PredictionTrigger(PREDICTION, poll_interval=0.1, deadline=time.time() + 5))
    assert event["status"] == "error"
    assert "cometapi_default" in event["message"]
    captured = capfd.readouterr()
    assert_secret_kept(key, json.dumps(event), json.dumps(event, ensure_ascii=False), caplog.text, captured.out)
    assert emulator.stats(detail=False)["requests"] == 0
