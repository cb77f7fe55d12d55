"""The provider info Airflow reads: valid against Airflow's schema, and everything it names exists."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

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


def _provider_plugins(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The plugins Airflow's loader of provider plugins makes, loaded (``on_load`` called)."""
    from airflow import plugins_manager

    if hasattr(plugins_manager, "_load_providers_plugins"):  # Airflow 3.3: returns them
        plugins, errors = plugins_manager._load_providers_plugins()
        assert not errors
        for plugin in plugins:
            plugin.on_load()  # as Airflow registers it
        return list(plugins)
    # Airflow 3.1 and 3.2 register them (on_load included) into the module's list.
    monkeypatch.setattr(plugins_manager, "plugins", [])
    monkeypatch.setattr(plugins_manager, "loaded_plugins", set())
    plugins_manager.load_providers_plugins()
    return list(plugins_manager.plugins)


def test_airflow_loads_the_plugin_from_the_provider_info(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The provider info's ``plugins`` alone registers the Images tab: Airflow's own loader of
    provider plugins (used with ``[core] lazy_discover_providers`` off; the ``airflow.plugins``
    entry point covers the default) finds, imports and accepts it, with its app and both tabs.
    """
    from airflow.providers_manager import ProvidersManager

    from airflow_provider_cometapi.plugins.cometapi import URL_PREFIX, LazyGalleryApp

    listed = [info for info in ProvidersManager().plugins if info.provider_name == "airflow-provider-cometapi"]
    assert [(info.name, info.plugin_class) for info in listed] == [
        ("cometapi", "airflow_provider_cometapi.plugins.cometapi.CometAPIPlugin")
    ]
    # The loader keeps only a plugin it found valid (is_valid_plugin).
    (plugin,) = [plugin for plugin in _provider_plugins(monkeypatch) if plugin.name == "cometapi"]

    (app,) = plugin.fastapi_apps
    assert app["url_prefix"] == URL_PREFIX and app["name"] == "CometAPI images"
    assert isinstance(app["app"], LazyGalleryApp)
    views = {view["destination"]: view for view in plugin.external_views}
    assert set(views) == {"dag_run", "task_instance"}
    assert {view["name"] for view in views.values()} == {"Images"}
    assert views["dag_run"]["href"].endswith(f"{URL_PREFIX}/gallery/{{DAG_ID}}/{{RUN_ID}}")
    assert views["task_instance"]["href"].endswith("/{TASK_ID}?map_index={MAP_INDEX}")
    assert {view["url_route"] for view in views.values()} == {"cometapi-run-images", "cometapi-task-images"}
