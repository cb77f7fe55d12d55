"""
The Images tab in a real browser, against a real api-server with the plugin loaded (Airflow's
SimpleAuthManager): a run's images, a mapped task's, the full view, what anonymous and hostile
requests get, and the review DAG from its prompt to the published file.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import expect

from airflow_provider_cometapi.emulator import EmulatorProcess
from tests.e2e.harness import AirflowStack
from tests.ui.gallery import (
    EXAMPLE_DAGS,
    GALLERY_DAGS,
    gallery_path,
    get,
    images_frame,
    q,
    signed_in,
    stack_env,
    wait_for_state,
    wait_until_loaded,
    xcom,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from playwright.sync_api import Browser, Page

    from tests.ui.conftest import Screenshots

API_KEY = "ui-gallery-secret-key-5f1c"


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProcess]:
    # Long enough that a deferring task has left its worker before the trigger fires: a faster
    # answer races Airflow's own hand-over from worker to triggerer on a loaded machine.
    with EmulatorProcess(api_key=API_KEY, duration=5.0) as running:
        yield running


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gallery-images")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, emulator: EmulatorProcess, images: Path) -> Iterator[AirflowStack]:
    home = tmp_path_factory.mktemp("airflow-gallery")
    with AirflowStack(home, [GALLERY_DAGS, EXAMPLE_DAGS], env=stack_env(emulator, images)) as running:
        yield running


@pytest.fixture(scope="module")
def runs(stack: AirflowStack) -> dict[str, str]:
    """One run of each gallery DAG, started together and waited for."""
    started = {dag_id: stack.trigger(dag_id) for dag_id in ("cometapi_ui_gallery", "cometapi_ui_mapped")}
    for dag_id, run_id in started.items():
        stack.wait_for_run(dag_id, run_id)
    return started


@pytest.fixture(scope="module")
def page(browser: Browser, stack: AirflowStack) -> Iterator[Page]:
    tab = signed_in(browser, stack)
    yield tab
    tab.context.close()


# --- The run's tab ------------------------------------------------------------------------------


def test_the_run_tab_shows_every_image_of_the_run(
    page: Page, stack: AirflowStack, runs: dict[str, str], emulator: EmulatorProcess, screenshots: Screenshots
):
    run_id = runs["cometapi_ui_gallery"]
    stored = xcom(stack, "cometapi_ui_gallery", run_id, "store")
    outputs = [uri for uri in stored if not uri.endswith(".json")]
    assert len(outputs) == 2

    page.goto(f"/dags/cometapi_ui_gallery/runs/{q(run_id)}")
    page.get_by_role("link", name="Images", exact=True).click()
    frame = images_frame(page)
    figures = frame.locator("figure")
    # Two stored outputs, one output still at the gateway, one failed prediction.
    expect(figures).to_have_count(4)
    expect(frame.locator("p.summary")).to_contain_text("4 images")

    widths = wait_until_loaded(frame.locator("figure img"))
    assert len(widths) == 3 and all(width > 0 for width in widths), widths

    fox = figures.filter(has_text="a red fox in fresh snow")
    expect(fox).to_have_count(2)
    for index in range(2):
        card = fox.nth(index)
        expect(card).to_contain_text("black-forest-labs/flux-schnell")
        expect(card.locator("dd").nth(1)).to_have_text("42")
        expect(card.locator("dd").nth(2)).to_have_text("16:9")
        expect(card.locator("dd").nth(3)).to_have_text("succeeded")
        expect(card.locator(".badge")).to_have_text("stored")
        name = outputs[index].rsplit("/", 1)[-1]
        expect(card.locator("img")).to_have_attribute("src", re.compile(re.escape(f"/store/files/{name}") + "$"))

    sketch = figures.filter(has_text="a pencil sketch of an owl")
    expect(sketch.locator(".badge")).to_contain_text("expiring")
    expect(sketch.locator("img")).to_have_attribute("src", re.compile(f"^{re.escape(emulator.base_url)}/"))
    expect(sketch.locator("dd").nth(1)).to_have_text("7")

    doomed = figures.filter(has_text="a forbidden picture")
    expect(doomed.locator("img")).to_have_count(0)
    # The gateway's own error, which the operator recorded before the task failed.
    expect(doomed.locator(".noimage")).to_contain_text("NSFW content detected")
    expect(doomed.locator("dd").nth(3)).to_have_text("failed")
    page.mouse.move(0, 0)
    screenshots.take(page, "images-run-tab.png")
    assert API_KEY not in page.content()
    assert API_KEY not in frame.locator("html").inner_html()


def test_a_click_opens_the_full_image(page: Page, runs: dict[str, str], screenshots: Screenshots):
    frame = images_frame(page)
    frame.locator("figure", has_text="a red fox in fresh snow").first.locator("a.image").click()
    full = frame.locator(".full img")
    expect(full).to_be_visible()
    assert wait_until_loaded(full) > [0]
    table = frame.locator("table")
    expect(table).to_contain_text("a red fox in fresh snow")
    expect(table).to_contain_text("Stored at")
    expect(table).to_contain_text("input.seed")
    screenshots.take(page, "images-full-view.png")


def test_a_mapped_task_tab_shows_only_its_map_index(page: Page, stack: AirflowStack, runs: dict[str, str]):
    run_id = runs["cometapi_ui_mapped"]
    page.goto(f"/dags/cometapi_ui_mapped/runs/{q(run_id)}/tasks/generate/mapped/1")
    page.get_by_role("link", name="Images", exact=True).click()
    frame = images_frame(page)
    figures = frame.locator("figure")
    expect(figures).to_have_count(1)
    expect(figures).to_contain_text("a lighthouse at noon")
    expect(figures.locator("dd").nth(1)).to_have_text("2")
    expect(figures).to_have_attribute("data-map-index", "1")
    assert wait_until_loaded(frame.locator("figure img")) > [0]
    # The whole task: its three map indexes.
    page.goto(gallery_path("cometapi_ui_mapped", run_id, "generate"))
    expect(page.locator("figure")).to_have_count(3)


# --- What requests without the right to see get ---------------------------------------------------


def every_route(stack: AirflowStack, run_id: str) -> list[str]:
    """Each gallery route of the run, with real names in them, image bytes included."""
    stored = xcom(stack, "cometapi_ui_gallery", run_id, "store")
    name = stored[0].rsplit("/", 1)[-1]
    key = name.rsplit(".", 1)[0]
    return [
        gallery_path("cometapi_ui_gallery", run_id),
        gallery_path("cometapi_ui_gallery", run_id, "store"),
        gallery_path("cometapi_ui_gallery", run_id, "store") + "?map_index=-1",
        gallery_path("cometapi_ui_gallery", run_id, "store", "view", key),
        gallery_path("cometapi_ui_gallery", run_id, "store", "files", name),
    ]


def test_an_anonymous_request_gets_no_image(stack: AirflowStack, runs: dict[str, str]):
    run_id = runs["cometapi_ui_gallery"]
    token = stack.token
    for path in every_route(stack, run_id):
        assert get(stack, path, token).status_code == 200, path  # the route works, with a session
        for answer in (get(stack, path), get(stack, path, cookies={"_token": "not-a-token"})):
            assert answer.status_code in (401, 403), (path, answer.status_code)
            assert not answer.headers["content-type"].startswith(("image/", "text/html")), path
        assert get(stack, path, "forged.jwt.value").status_code in (401, 403)


def test_no_path_or_query_reads_a_file_the_run_did_not_record(
    stack: AirflowStack, runs: dict[str, str], images: Path, emulator: EmulatorProcess
):
    run_id = runs["cometapi_ui_gallery"]
    token = stack.token
    stored = xcom(stack, "cometapi_ui_gallery", run_id, "store")
    name = stored[0].rsplit("/", 1)[-1]
    folder = next(path for path in images.iterdir() if path.is_dir())
    # A file beside the stored ones that no task recorded: never served.
    (folder / "planted_0.png").write_bytes((folder / name).read_bytes())
    files = gallery_path("cometapi_ui_gallery", run_id, "store", "files")
    refused = [
        f"{files}/planted_0.png",
        f"{files}/{q('../' + name)}",
        f"{files}/..%2F..%2Fetc%2Fpasswd",
        f"{files}/{q(name.rsplit('.', 1)[0] + '.json')}",  # the sidecar is not an image
        f"{files}/{name}?map_index=0",  # another map index of the task
        gallery_path("cometapi_ui_gallery", run_id, "generate", "files", name),  # recorded by another task
        gallery_path("cometapi_ui_gallery", "no-such-run", "store", "files", name),
        gallery_path("cometapi_ui_other", run_id, "store", "files", name),
        f"{files}/{name}?uri=file:///etc/passwd",
    ]
    for path in refused[:-1]:
        answer = get(stack, path, token)
        assert answer.status_code in (404, 422), (path, answer.status_code)
        assert not answer.headers["content-type"].startswith("image/"), path
    # An unknown query parameter changes nothing: the recorded file, nothing else.
    assert get(stack, refused[-1], token).content == (folder / name).read_bytes()
    assert get(stack, f"{files}/{name}?map_index=oops", token).status_code == 422


def test_nothing_returned_contains_the_api_key(stack: AirflowStack, runs: dict[str, str]):
    run_id = runs["cometapi_ui_gallery"]
    for path in every_route(stack, run_id):
        answer = get(stack, path, stack.token)
        assert API_KEY.encode() not in answer.content
        assert all(API_KEY not in value for value in answer.headers.values())


# --- The review DAG ------------------------------------------------------------------------------


def test_the_review_dag_publishes_exactly_the_chosen_image(
    page: Page, stack: AirflowStack, images: Path, screenshots: Screenshots
):
    root = images / "review"
    run_id = stack.trigger("cometapi_review_and_publish", conf={"storage_root": f"file://{root}", "candidates": 3})
    wait_for_state(stack, "cometapi_review_and_publish", run_id, "review", {"awaiting_input", "deferred"})
    candidates = [
        uri for uri in xcom(stack, "cometapi_review_and_publish", run_id, "store") if not uri.endswith(".json")
    ]
    assert len(candidates) == 3

    page.goto(f"/dags/cometapi_review_and_publish/runs/{q(run_id)}/tasks/review")
    page.get_by_role("link", name=re.compile("^Required Action")).click()
    pictures = page.get_by_role("img", name=re.compile(r"^Candidate \d$"))
    expect(pictures).to_have_count(3)
    widths = wait_until_loaded(pictures)
    assert all(width > 0 for width in widths), widths
    page.get_by_label("Select one or multiple values").click()
    page.get_by_role("option", name="Candidate 2", exact=True).click()
    page.keyboard.press("Escape")
    page.get_by_text("Which of these images should be published?").scroll_into_view_if_needed()
    screenshots.take(page, "images-review.png")
    with page.expect_response(re.compile(r"/hitlDetails$")) as answer:
        page.get_by_role("button", name="Respond").click()
    assert answer.value.status == 200

    assert stack.wait_for_run("cometapi_review_and_publish", run_id) == "success"
    published = sorted((root / "published").iterdir())
    chosen = candidates[1].rsplit("/", 1)[-1]
    assert [path.name for path in published] == [chosen]
    source = next(path for path in (root / "candidates").rglob(chosen))
    assert published[0].read_bytes() == source.read_bytes()
    assert xcom(stack, "cometapi_review_and_publish", run_id, "publish") == [f"file://{root}/published/{chosen}"]
    events = stack.api("GET", "assets/events", params={"source_dag_id": "cometapi_review_and_publish"})
    (event,) = [e for e in events["asset_events"] if e["source_run_id"] == run_id]
    assert event["extra"]["uris"] == [f"file://{root}/published/{chosen}"]
