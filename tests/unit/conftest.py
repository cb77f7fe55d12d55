from __future__ import annotations

import pytest

from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
from tests.fixtures import FAST_RETRIES


@pytest.fixture
def hook(cometapi_conn):
    hook = CometAPIHook(retry_policy=FAST_RETRIES)
    yield hook
    hook.close()


@pytest.fixture
async def async_hook(cometapi_conn):
    async with CometAPIHook(retry_policy=FAST_RETRIES) as hook:
        yield hook
