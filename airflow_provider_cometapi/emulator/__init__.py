"""A local CometAPI-compatible server for demos, tests and offline DAG development.

``cometapi-emulator`` runs it; ``EmulatorProcess`` starts one as a subprocess for tests.
Pillow (the ``emulator`` extra) is needed only when images are rendered.
"""

from __future__ import annotations

from airflow_provider_cometapi.emulator.config import EmulatorConfig
from airflow_provider_cometapi.emulator.server import create_app
from airflow_provider_cometapi.emulator.testing import EmulatorError, EmulatorProcess

__all__ = ["EmulatorConfig", "EmulatorError", "EmulatorProcess", "create_app"]
