"""What a type checker (and so an IDE) knows about ``cometapi_task``: its arguments and what the function returns."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

# The version matrix's venvs hold the test tools only; the main venv has mypy.
api = pytest.importorskip("mypy.api", reason="mypy is not installed in this venv (the main venv has it)")

SAMPLE = textwrap.dedent(
    """
    from typing import Any
    from airflow_provider_cometapi.decorators import cometapi_task

    @cometapi_task(model="black-forest-labs/flux-schnell", deferrable=True, timeout=60)
    def good(subject: str) -> dict[str, Any]:
        return {"prompt": subject}

    @cometapi_task(model="black-forest-labs/flux-schnell")
    def prompt_only(subject: str) -> str:
        return subject

    @cometapi_task(model="black-forest-labs/flux-schnell")  # error: a list is no input
    def not_an_input(subject: str) -> list[str]:
        return [subject]

    reveal_type(good)
    cometapi_task(model="black-forest-labs/flux-schnell", poll_interval="fast")  # error: no such interval
    """
)


def test_the_signature_and_the_return_type_are_checked(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(SAMPLE)
    out, _, _ = api.run(["--strict", "--ignore-missing-imports", "--cache-dir", str(tmp_path / "cache"), str(sample)])
    lines = SAMPLE.splitlines()
    errors = {lines[int(line.split(":")[1]) - 1] for line in out.splitlines() if ": error:" in line}
    assert errors == {line for line in lines if "# error:" in line}, out
    assert 'Revealed type is "airflow.sdk.bases.decorator.Task[[subject: str]' in out
