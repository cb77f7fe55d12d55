"""The model catalogue and the input validation the emulator applies at create time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ASPECT_RATIOS: tuple[str, ...] = (
    "1:1",
    "16:9",
    "21:9",
    "3:2",
    "2:3",
    "4:5",
    "5:4",
    "3:4",
    "4:3",
    "9:16",
    "9:21",
)
MATCH_INPUT_IMAGE = "match_input_image"
OUTPUT_FORMATS: tuple[str, ...] = ("webp", "png", "jpg", "jpeg")
OUTCOMES: tuple[str, ...] = ("succeeded", "failed", "canceled", "aborted", "never")

DEFAULT_ERRORS: dict[str, str] = {
    "failed": "Prediction failed: the model raised an error (emulated).",
    "aborted": "Prediction aborted: the worker was stopped before it finished (emulated).",
}


@dataclass(frozen=True, slots=True)
class ModelInfo:
    owner: str
    name: str
    # flux-schnell and flux-dev answer a list of URLs, the others a single URL string.
    list_output: bool
    kontext: bool
    # Only shapes the progress lines in the logs.
    steps: int

    @property
    def model_id(self) -> str:
        return f"{self.owner}/{self.name}"


_BFL = "black-forest-labs"
MODELS: dict[str, ModelInfo] = {
    m.model_id: m
    for m in (
        ModelInfo(_BFL, "flux-schnell", list_output=True, kontext=False, steps=4),
        ModelInfo(_BFL, "flux-dev", list_output=True, kontext=False, steps=28),
        ModelInfo(_BFL, "flux-pro", list_output=False, kontext=False, steps=25),
        ModelInfo(_BFL, "flux-1.1-pro", list_output=False, kontext=False, steps=25),
        ModelInfo(_BFL, "flux-1.1-pro-ultra", list_output=False, kontext=False, steps=25),
        ModelInfo(_BFL, "flux-kontext-pro", list_output=False, kontext=True, steps=28),
        ModelInfo(_BFL, "flux-kontext-max", list_output=False, kontext=True, steps=28),
    )
}


def split_model_ref(ref: str) -> tuple[str, str | None]:
    """``owner/name:version`` -> (``owner/name``, version)."""
    model, sep, version = ref.partition(":")
    return model, (version if sep else None)


@dataclass(frozen=True, slots=True)
class InvalidField:
    type: str
    field: str
    description: str

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "field": self.field, "description": self.description}


@dataclass(frozen=True, slots=True)
class Control:
    """The validated ``_emulator`` input key: per-prediction behaviour for tests."""

    duration: float | None = None
    starting_for: float | None = None
    outcome: str = "succeeded"
    error: str | None = None
    unknown_status: str | None = None
    data_uri: bool = False
    partial_output: bool = False


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but JSON true is not a number for the API.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float)) and not isinstance(value, bool)


def validate_input(model: ModelInfo, raw: Mapping[str, Any]) -> tuple[dict[str, Any], Control, list[InvalidField]]:
    """Check the known FLUX fields; unknown keys pass through unchanged.

    Returns the echoed input (without ``_emulator``), the control settings and the errors.
    """
    errors: list[InvalidField] = []
    echo = {k: v for k, v in raw.items() if k != "_emulator"}

    prompt = raw.get("prompt")
    if prompt is None:
        errors.append(InvalidField("required", "input.prompt", "prompt is required"))
    elif not isinstance(prompt, str) or not prompt.strip():
        errors.append(InvalidField("type", "input.prompt", "prompt must be a non-empty string"))

    if "aspect_ratio" in raw:
        allowed = ASPECT_RATIOS + ((MATCH_INPUT_IMAGE,) if model.kontext else ())
        if raw["aspect_ratio"] not in allowed:
            errors.append(
                InvalidField(
                    "enum",
                    "input.aspect_ratio",
                    "aspect_ratio must be one of the following: " + ", ".join(allowed),
                )
            )
    if "output_format" in raw and raw["output_format"] not in OUTPUT_FORMATS:
        errors.append(
            InvalidField(
                "enum",
                "input.output_format",
                "output_format must be one of the following: " + ", ".join(OUTPUT_FORMATS),
            )
        )
    if "output_quality" in raw:
        q = raw["output_quality"]
        if not _is_int(q) or not 1 <= q <= 100:
            errors.append(InvalidField("range", "input.output_quality", "output_quality must be an integer 1..100"))
    # Single-output models have no num_outputs field; like the real API they ignore it.
    if model.list_output and "num_outputs" in raw:
        n = raw["num_outputs"]
        if not _is_int(n) or not 1 <= n <= 4:
            errors.append(InvalidField("range", "input.num_outputs", "num_outputs must be an integer 1..4"))
    if "seed" in raw and not _is_int(raw["seed"]):
        errors.append(InvalidField("type", "input.seed", "seed must be an integer"))

    control = Control()
    if "_emulator" in raw:
        control = _validate_control(raw["_emulator"], errors)
    return echo, control, errors


def _validate_control(raw: Any, errors: list[InvalidField]) -> Control:
    if not isinstance(raw, Mapping):
        errors.append(InvalidField("type", "input._emulator", "_emulator must be an object"))
        return Control()
    before = len(errors)
    known = {"duration", "starting_for", "outcome", "error", "unknown_status", "data_uri", "partial_output"}
    for key in raw:
        if key not in known:
            errors.append(InvalidField("unknown", f"input._emulator.{key}", f"unknown _emulator option {key!r}"))
    for key in ("duration", "starting_for"):
        if key in raw and (not _is_number(raw[key]) or raw[key] < 0):
            errors.append(InvalidField("type", f"input._emulator.{key}", f"{key} must be a number >= 0"))
    outcome = raw.get("outcome", "succeeded")
    if outcome not in OUTCOMES:
        errors.append(InvalidField("enum", "input._emulator.outcome", "outcome must be one of: " + ", ".join(OUTCOMES)))
    for key in ("error", "unknown_status"):
        if key in raw and raw[key] is not None and (not isinstance(raw[key], str) or not raw[key]):
            errors.append(InvalidField("type", f"input._emulator.{key}", f"{key} must be a non-empty string"))
    for key in ("data_uri", "partial_output"):
        if key in raw and not isinstance(raw[key], bool):
            errors.append(InvalidField("type", f"input._emulator.{key}", f"{key} must be a boolean"))
    if len(errors) != before:
        return Control()
    return Control(
        duration=float(raw["duration"]) if "duration" in raw else None,
        starting_for=float(raw["starting_for"]) if "starting_for" in raw else None,
        outcome=str(outcome),
        error=raw.get("error"),
        unknown_status=raw.get("unknown_status"),
        data_uri=bool(raw.get("data_uri", False)),
        partial_output=bool(raw.get("partial_output", False)),
    )
