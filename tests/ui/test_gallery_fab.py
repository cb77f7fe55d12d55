"""
The gallery under an auth manager with per-DAG permissions (the FAB provider's): a user whose
role may read only another DAG gets 403 on every route of this DAG's run, the image bytes
included, and sees that other DAG's images; anonymous requests get 401.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import expect

from airflow_provider_cometapi.emulator import EmulatorProcess
from tests.e2e.harness import ADMIN_PASSWORD, ADMIN_USER, AirflowStack
from tests.ui.gallery import (
    GALLERY_DAGS,
    gallery_path,
    get,
    images_frame,
    q,
    stack_env,
    token_for,
    wait_until_loaded,
    xcom,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Browser

pytest.importorskip("airflow.providers.fab", reason="the FAB provider (apache-airflow-providers-fab) is not installed")

FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
OTHER_USER, OTHER_PASSWORD = "other-team", "other-team-password"
OTHER_DAG = "cometapi_ui_other"
# What a FAB role needs to read one DAG's runs, task instances and XComs, and see the tab (Plugins).
OTHER_ROLE_PERMISSIONS = [f"DAG:{OTHER_DAG}", "DAG Runs", "Task Instances", "XComs", "Website", "Plugins"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    images = tmp_path_factory.mktemp("fab-images")
    home = tmp_path_factory.mktemp("airflow-fab")
    with EmulatorProcess(api_key="ui-fab-secret-key-77a0", duration=1.0) as emulator:
        env = {**stack_env(emulator, images), "AIRFLOW__CORE__AUTH_MANAGER": FAB}
        with AirflowStack(home, [GALLERY_DAGS], env=env) as running:
            running.airflow(
                "users", "create", "--username", ADMIN_USER, "--password", ADMIN_PASSWORD, "--role", "Admin",
                "--firstname", "Ada", "--lastname", "Admin", "--email", "admin@example.com",
            )  # fmt: skip
            running.wait_for_dag(OTHER_DAG)
            running.wait_for_dag("cometapi_ui_gallery")
            running.airflow("sync-perm", "--include-dags")
            running.airflow("roles", "create", "OtherTeam")
            running.airflow("roles", "add-perms", "OtherTeam", "-a", "can_read", "-r", *OTHER_ROLE_PERMISSIONS)
            running.airflow(
                "users", "create", "--username", OTHER_USER, "--password", OTHER_PASSWORD, "--role", "OtherTeam",
                "--firstname", "Otto", "--lastname", "Other", "--email", "other@example.com",
            )  # fmt: skip
            yield running


@pytest.fixture(scope="module")
def runs(stack: AirflowStack) -> dict[str, str]:
    started = {dag_id: stack.trigger(dag_id) for dag_id in ("cometapi_ui_gallery", OTHER_DAG)}
    for dag_id, run_id in started.items():
        stack.wait_for_run(dag_id, run_id)
    return started


def test_a_user_allowed_only_another_dag_gets_403(stack: AirflowStack, runs: dict[str, str]):
    other = token_for(stack, OTHER_USER, OTHER_PASSWORD)
    run_id = runs["cometapi_ui_gallery"]
    stored = xcom(stack, "cometapi_ui_gallery", run_id, "store")
    image = next(uri for uri in stored if not uri.endswith(".json")).rsplit("/", 1)[-1]
    forbidden = [
        gallery_path("cometapi_ui_gallery", run_id),
        gallery_path("cometapi_ui_gallery", run_id, "generate"),
        gallery_path("cometapi_ui_gallery", run_id, "store", "view", image.rsplit(".", 1)[0]),
        gallery_path("cometapi_ui_gallery", run_id, "store", "files", image),
    ]
    for path in forbidden:
        assert get(stack, path, stack.token).status_code == 200, path  # the admin sees it
        answer = get(stack, path, other)
        assert answer.status_code == 403, (path, answer.status_code)
        assert not answer.headers["content-type"].startswith(("image/", "text/html"))
        assert get(stack, path).status_code == 401, path
    # The same user reads the DAG their role names.
    own = get(stack, gallery_path(OTHER_DAG, runs[OTHER_DAG]), other)
    assert own.status_code == 200
    assert "another team&#x27;s cat" in own.text


def test_the_other_users_tab_shows_their_dags_images(browser: Browser, stack: AirflowStack, runs: dict[str, str]):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=stack.base_url)
    context.set_default_timeout(60_000)
    page = context.new_page()
    page.goto("/auth/login/")
    page.get_by_label("Username").fill(OTHER_USER)
    page.get_by_label("Password").fill(OTHER_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{stack.base_url}/")
    page.goto(f"/dags/{OTHER_DAG}/runs/{q(runs[OTHER_DAG])}")
    page.get_by_role("link", name="Images", exact=True).click()
    frame = images_frame(page)
    expect(frame.locator("figure")).to_have_count(1)
    assert wait_until_loaded(frame.locator("figure img")) > [0]
    # Their browser session on this DAG's gallery: refused, no page.
    answer = page.request.get(gallery_path("cometapi_ui_gallery", runs["cometapi_ui_gallery"]))
    assert answer.status == 403
    context.close()
