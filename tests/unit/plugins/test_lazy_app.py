"""The plugin's app is built on its first request: loading the plugin (as workers do) imports no FastAPI app."""

from __future__ import annotations

import subprocess
import sys

from fastapi import FastAPI
from fastapi.testclient import TestClient

from airflow_provider_cometapi.plugins.cometapi import CometAPIPlugin


def test_mounted_as_the_api_server_mounts_it_the_app_serves_the_gallery():
    (app,) = CometAPIPlugin.fastapi_apps
    root = FastAPI()
    root.mount(app["url_prefix"], app["app"])
    answer = TestClient(root).get("/cometapi/gallery/d/r")
    assert answer.status_code == 401  # the gallery's own answer to a request without a session


def test_loading_the_plugin_imports_neither_the_app_nor_the_api_servers_security():
    code = (
        "import sys\n"
        "from airflow_provider_cometapi.plugins.cometapi import CometAPIPlugin\n"
        "assert CometAPIPlugin.fastapi_apps and CometAPIPlugin.external_views\n"
        "loaded = [m for m in ('airflow_provider_cometapi.plugins.app', 'airflow.api_fastapi.core_api.security')"
        " if m in sys.modules]\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
