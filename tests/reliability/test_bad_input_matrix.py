"""
The bad-input matrix: every mistake a DAG author or platform team can make, and its one error.

Each row asserts the error type, that the message names the problem and the fix, that nothing
was created, and, where the mistake can be known locally, that no request reached CometAPI
at all. The operators are called as a task would call them, against the emulator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_cometapi.emulator.models import MODELS
from airflow_provider_cometapi.emulator.testing import EmulatorProcess
from airflow_provider_cometapi.exceptions import (
    AuthenticationError,
    CometAPIConfigurationError,
    DestinationNotWritableError,
    InvalidInputError,
    InvalidModelIdError,
    InvalidParameterError,
    InvalidPredictionIdError,
    ModelNotFoundError,
    PredictionNotFoundError,
)
from airflow_provider_cometapi.operators.prediction import CreatePredictionOperator
from airflow_provider_cometapi.operators.storage import SavePredictionOutputsOperator
from airflow_provider_cometapi.sensors.prediction import PredictionSensor
from tests.fixtures import TaskInstance, set_connection

SCHNELL = "black-forest-labs/flux-schnell"
WRONG_KEY = "sk-wrong-key-4f1d2c"
UNKNOWN_ID = "abcdefghijklmnopqrstuvwxyz"


def generate(model: str = SCHNELL, **model_input: Any) -> Callable[[Path], Any]:
    def run(tmp_path: Path) -> Any:
        operator = CreatePredictionOperator(task_id="generate", model=model, input=model_input, poll_interval=0.1)
        return operator.execute({"ti": TaskInstance()})  # type: ignore[arg-type]

    return run


def sense(prediction_id: str) -> Callable[[Path], Any]:
    def run(tmp_path: Path) -> Any:
        sensor = PredictionSensor(task_id="sense", prediction_id=prediction_id, poke_interval=0.1, timeout=5)
        return sensor.execute({"ti": TaskInstance()})  # type: ignore[arg-type]

    return run


def store(prediction_id: str, destination: Callable[[Path], str]) -> Callable[[Path], Any]:
    def run(tmp_path: Path) -> Any:
        operator = SavePredictionOutputsOperator(
            task_id="store", prediction_id=prediction_id, destination=destination(tmp_path)
        )
        return operator.execute({"ti": TaskInstance()})  # type: ignore[arg-type]

    return run


def under_a_file(tmp_path: Path) -> str:
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where a folder should be")
    return (blocker / "images").as_uri()


def read_only_file_system(tmp_path: Path) -> str:
    # sysfs refuses new folders even to root (CI runs as root, which file modes do not stop).
    return "file:///sys/cometapi-images"


@dataclass(frozen=True)
class Row:
    name: str
    action: Callable[[Path], Any]
    error: type[Exception]
    says: tuple[str, ...]  # the problem and the fix, as the message must say them
    local: bool = True  # knowable without asking CometAPI: no request at all
    connection: dict[str, Any] | None = None  # overrides of the emulator's connection; {} = none


BAD_FIELDS = [
    ("aspect_ratio", "2:1", "1:1, 16:9"),
    ("output_format", "gif", "webp, png, jpg, jpeg"),
    ("output_quality", 0, "from 1 to 100"),
    ("output_quality", 101, "from 1 to 100"),
    ("output_quality", "high", "from 1 to 100"),
]
FIX_INPUT = "Fix these fields in the operator's `input`"

ROWS = [
    Row("empty prompt", generate(prompt=""), InvalidInputError, ("input.prompt", "non-empty", FIX_INPUT)),
    Row("blank prompt", generate(prompt="   "), InvalidInputError, ("input.prompt", FIX_INPUT)),
    Row("missing prompt", generate(aspect_ratio="1:1"), InvalidInputError, ("input.prompt", FIX_INPUT)),
    *(
        Row(
            f"{field}={value!r} for {model}",
            generate(model, prompt="a fox", **{field: value}),
            InvalidInputError,
            (f"input.{field}", repr(value), allowed, FIX_INPUT),
        )
        for model in MODELS
        for field, value, allowed in BAD_FIELDS
    ),
    Row(
        "model id without owner",
        generate("flux-schnell", prompt="x"),
        InvalidModelIdError,
        ("'flux-schnell'", "owner/name"),
    ),
    Row("model id with spaces", generate("black forest/flux", prompt="x"), InvalidModelIdError, ("owner/name",)),
    Row("empty model id", generate("", prompt="x"), InvalidModelIdError, ("owner/name",)),
    Row(
        "unknown model",
        generate("black-forest-labs/flux-imaginary", prompt="x"),
        ModelNotFoundError,
        ("Unknown model 'black-forest-labs/flux-imaginary'", "Check the model id", "GET /v1/models"),
        local=False,
    ),
    Row(
        "missing connection",
        generate(prompt="x"),
        CometAPIConfigurationError,
        ("'cometapi_default' does not exist", "Admin > Connections", "AIRFLOW_CONN_COMETAPI_DEFAULT"),
        connection={},
    ),
    Row(
        "empty key",
        generate(prompt="x"),
        CometAPIConfigurationError,
        ("has no API key", "Put your CometAPI key"),
        connection={"password": ""},
    ),
    Row(
        "wrong key",
        generate(prompt="x"),
        AuthenticationError,
        ("rejected the API key", "Set a valid key", "'cometapi_default'"),
        local=False,
        connection={"password": WRONG_KEY},
    ),
    Row(
        "base URL that is not http(s)",
        generate(prompt="x"),
        CometAPIConfigurationError,
        ("is not an http(s) URL", "Leave it empty"),
        connection={"host": "ftp://files.example"},
    ),
    Row(
        "timeout extra that is not a number",
        generate(prompt="x"),
        CometAPIConfigurationError,
        ("timeout",),
        connection={"extra": {"timeout": "soon"}},
    ),
    Row(
        "unknown prediction id",
        sense(UNKNOWN_ID),
        PredictionNotFoundError,
        (f"Prediction '{UNKNOWN_ID}' was not found", "Check the id"),
        local=False,
    ),
    Row(
        "malformed prediction id",
        sense("../../etc/passwd"),
        InvalidPredictionIdError,
        ("Invalid prediction id", "XCom key 'prediction_id'"),
    ),
    Row("empty prediction id", sense(""), InvalidPredictionIdError, ("Invalid prediction id",)),
    Row(
        "destination under a file",
        store(UNKNOWN_ID, under_a_file),
        DestinationNotWritableError,
        ("Cannot write to the destination", "Choose a `destination`"),
    ),
    Row(
        "destination on a read-only file system",
        store(UNKNOWN_ID, read_only_file_system),
        DestinationNotWritableError,
        ("Cannot write to the destination", "Choose a `destination`"),
    ),
    Row(
        "prefer_wait out of range",
        lambda tmp_path: CreatePredictionOperator(
            task_id="generate", model=SCHNELL, input={"prompt": "x"}, prefer_wait=90
        ).execute({"ti": TaskInstance()}),  # type: ignore[arg-type]
        InvalidParameterError,
        ("prefer_wait must be a whole number of seconds from 1 to 60",),
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_bad_input(row: Row, emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if row.connection == {}:
        monkeypatch.delenv("AIRFLOW_CONN_COMETAPI_DEFAULT", raising=False)
    else:
        set_connection(monkeypatch, {**emulator.connection_dict(), **(row.connection or {})})
    with pytest.raises(row.error) as raised:
        row.action(tmp_path)
    message = str(raised.value)
    for piece in row.says:
        assert piece in message
    assert emulator.api_key not in message and WRONG_KEY not in message
    stats = emulator.stats(detail=False)
    assert stats["creates"] == 0, "a bad input must create nothing"
    if row.local:
        assert stats["requests"] == 0, "a mistake known locally must fail before any request"


def test_poll_interval_is_checked_when_the_dag_is_parsed() -> None:
    with pytest.raises(ValueError, match="poll_interval must be a positive number"):
        CreatePredictionOperator(task_id="generate", model=SCHNELL, input={"prompt": "x"}, poll_interval=0)
