"""
The browser tier: the real api-server (with a scheduler, dag-processor and triggerer for a
task's log) on PostgreSQL, driven by headless Chromium through Playwright. Run with `make ui`;
`make ui-screenshots` also writes the docs' screenshots (docs/img/).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from airflow_provider_cometapi.emulator import EmulatorProcess
from tests.e2e.harness import ADMIN_PASSWORD, ADMIN_USER, REPO, AirflowStack

if TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Browser, Page

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/ui/" in str(item.fspath):
            item.add_marker(pytest.mark.ui)


@pytest.fixture(scope="module")
def ui_emulator() -> Iterator[EmulatorProcess]:
    # Long enough for the task to defer, so the log shows the triggerer's part too.
    with EmulatorProcess(api_key="ui-secret-key-8d2e71", duration=4.0) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, ui_emulator: EmulatorProcess) -> Iterator[AirflowStack]:
    home = tmp_path_factory.mktemp("airflow-ui")
    # Connection testing is off by default in Airflow 3; the deployment turns it on.
    env = {"AIRFLOW__CORE__TEST_CONNECTION": "Enabled"}
    with AirflowStack(home, [REPO / "tests" / "ui" / "dags"], env=env) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make ui` installs Debian's package")
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser: Browser, stack: AirflowStack) -> Iterator[Page]:
    """One signed-in tab for the module: the tests follow a user through the screens in order."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, base_url=stack.base_url)
    context.set_default_timeout(30_000)
    tab = context.new_page()
    tab.goto("/auth/login")
    tab.get_by_label("Username").fill(ADMIN_USER)
    tab.get_by_label("Password").fill(ADMIN_PASSWORD)
    tab.get_by_role("button", name="Sign in").click()
    tab.wait_for_url(f"{stack.base_url}/")
    yield tab
    context.close()


class Screenshots:
    """Where screenshots go: docs/img/ for `make ui-screenshots`, else the test's temp folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def take(self, page: Page, name: str) -> Path:
        path = self.folder / name
        page.screenshot(path=str(path))
        return path


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Screenshots:
    target = os.environ.get("UI_SCREENSHOTS")
    folder = (REPO / target) if target else tmp_path_factory.mktemp("screenshots")
    return Screenshots(folder)
