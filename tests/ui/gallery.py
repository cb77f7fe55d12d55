"""What the gallery test modules share: the stack's settings, a signed-in tab, waits on images."""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from tests.e2e.harness import ADMIN_PASSWORD, ADMIN_USER, REPO

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, FrameLocator, Locator, Page

    from airflow_provider_cometapi.emulator import EmulatorProcess
    from tests.e2e.harness import AirflowStack

GALLERY_DAGS = REPO / "tests" / "ui" / "gallery_dags"
EXAMPLE_DAGS = REPO / "dags_examples"


def stack_env(emulator: EmulatorProcess, images: Path) -> dict[str, str]:
    return {
        **emulator.airflow_env(),
        "COMETAPI_UI_IMAGES": str(images),
    }


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def gallery_path(dag_id: str, run_id: str, *rest: str) -> str:
    return "/".join([f"/cometapi/gallery/{q(dag_id)}/{q(run_id)}", *(q(part) for part in rest)])


def signed_in(browser: Browser, stack: AirflowStack, user: str = ADMIN_USER, password: str = ADMIN_PASSWORD) -> Page:
    context: BrowserContext = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=stack.base_url)
    context.set_default_timeout(60_000)
    tab = context.new_page()
    tab.goto("/auth/login")
    tab.get_by_label("Username").fill(user)
    tab.get_by_label("Password").fill(password)
    tab.get_by_role("button", name="Sign in").click()
    tab.wait_for_url(f"{stack.base_url}/")
    return tab


def images_frame(page: Page) -> FrameLocator:
    return page.frame_locator('iframe[title="Images"]')


def wait_until_loaded(images: Locator, timeout: float = 60) -> list[int]:
    """Scroll every image into view (they load lazily) and wait until each has decoded; their widths."""
    widths = []
    for index in range(images.count()):
        image = images.nth(index)
        image.scroll_into_view_if_needed()
        deadline = time.monotonic() + timeout
        while True:
            width = int(image.evaluate("img => img.complete ? img.naturalWidth : -1"))
            if width != -1 or time.monotonic() > deadline:
                break
            image.page.wait_for_timeout(200)
        widths.append(width)
    return widths


def xcom(stack: AirflowStack, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
    entry = stack.api("GET", f"dags/{dag_id}/dagRuns/{q(run_id)}/taskInstances/{task_id}/xcomEntries/{key}")
    value = entry["value"]
    return json.loads(value) if isinstance(value, str) else value


def get(stack: AirflowStack, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(f"{stack.base_url}{path}", headers=headers, timeout=60, allow_redirects=False, **kwargs)


def token_for(stack: AirflowStack, user: str, password: str) -> str:
    answer = requests.post(f"{stack.base_url}/auth/token", json={"username": user, "password": password}, timeout=60)
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def wait_for_state(stack: AirflowStack, dag_id: str, run_id: str, task_id: str, states: set[str], timeout: float = 300):
    """Wait for ``task_id`` to reach one of ``states``; fail at once, with the logs, if the run breaks."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        instances = stack.task_instances(dag_id, run_id)
        seen = next((ti["state"] for ti in instances if ti["task_id"] == task_id), None)
        if seen in states:
            return seen
        broken = [ti for ti in instances if ti["state"] in ("failed", "upstream_failed")]
        if broken:
            logs = "\n".join(
                stack.task_log(dag_id, run_id, ti["task_id"], max(ti["try_number"], 1), ti["map_index"])[-12000:]
                for ti in broken
                if ti["state"] == "failed"
            )
            raise AssertionError(f"{dag_id} broke before {task_id} was {states}: {broken}\n{logs}")
        time.sleep(1)
    raise TimeoutError(f"{task_id} of {dag_id} stayed {seen}, not one of {states}, for {timeout}s")
