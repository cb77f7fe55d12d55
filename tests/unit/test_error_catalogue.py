"""The error catalogue (docs/errors.md) documents every error class the provider raises."""

from __future__ import annotations

import inspect
from pathlib import Path

from airflow_provider_cometapi import exceptions

CATALOGUE = (Path(__file__).resolve().parents[2] / "docs" / "errors.md").read_text()


def test_every_error_class_is_in_the_catalogue():
    raised = {
        name
        for name, member in inspect.getmembers(exceptions, inspect.isclass)
        if issubclass(member, exceptions.CometAPIError) and member.__module__ == exceptions.__name__
    }
    missing = sorted(name for name in raised if f"`{name}`" not in CATALOGUE)
    assert not missing, f"add these to docs/errors.md: {missing}"
