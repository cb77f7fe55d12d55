"""Fixtures for the emulator's own tests (the session emulator comes from tests/conftest.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .helpers import Api

if TYPE_CHECKING:
    from airflow_provider_cometapi.emulator.testing import EmulatorProcess


@pytest.fixture
def api(emulator: EmulatorProcess) -> Api:
    return Api(emulator)
