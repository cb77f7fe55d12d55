"""The provider info Airflow reads: valid against Airflow's schema, and everything it names exists."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import airflow
import jsonschema
import pytest

from airflow_provider_cometapi.get_provider_info import get_provider_info

INFO = get_provider_info()


def test_the_provider_info_is_valid_for_airflow() -> None:
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(INFO, schema)


@pytest.mark.parametrize("section", ["operators", "sensors", "hooks", "triggers"])
def test_every_listed_module_imports(section: str) -> None:
    modules = [module for entry in INFO[section] for module in entry["python-modules"]]
    assert modules
    for module in modules:
        importlib.import_module(module)


def test_airflow_registers_the_extra_link_and_the_trigger() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow_provider_cometapi.links.prediction.PredictionLink" in manager.extra_links_class_names
    trigger_modules = {info.package_name: info for info in manager.trigger}
    assert "airflow-provider-cometapi" in trigger_modules
