"""
A user's path through the Airflow UI with the provider installed, in a real browser: add a
CometAPI connection through the form, test it against the emulator, see a wrong key and an
empty port fail, run a task on the connection and read its log and link.

The tests share one signed-in tab and run in order.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from playwright.sync_api import expect

from airflow_provider_cometapi.get_provider_info import get_provider_info

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

    from airflow_provider_cometapi.emulator import EmulatorProcess
    from tests.e2e.harness import AirflowStack
    from tests.ui.conftest import Screenshots

CONN_ID = "cometapi_ui"
DAG_ID = "cometapi_ui_prediction"
(CONNECTION_TYPE,) = get_provider_info()["connection-types"]
BEHAVIOUR = CONNECTION_TYPE["ui-field-behaviour"]
CONN_FIELDS = CONNECTION_TYPE["conn-fields"]


def open_new_connection_form(page: Page, conn_id: str) -> Locator:
    page.goto("/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Connection ID").fill(conn_id)
    dialog.get_by_role("combobox").fill("CometAPI")
    page.keyboard.press("Enter")
    expect(dialog.get_by_label("API key")).to_be_visible()
    return dialog


def fill_standard_fields(dialog: Locator, *, base_url: str, api_key: str, port: str) -> None:
    dialog.get_by_label("Base URL").fill(base_url)
    dialog.get_by_label("API key").fill(api_key)
    dialog.get_by_label("Port").fill(port)


def save(page: Page, dialog: Locator, conn_id: str) -> Locator:
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    row = connection_row(page, conn_id)
    expect(row).to_be_visible()
    return row


def connection_row(page: Page, conn_id: str) -> Locator:
    return page.locator("tbody tr").filter(has=page.get_by_text(conn_id, exact=True))


def press_test(page: Page, row: Locator) -> Locator:
    """Press the row's Test button; the notice (toast) that says how it went."""
    page.mouse.move(0, 0)  # no tooltip of an earlier row over this one, no notice kept open by hovering
    toasts = page.locator("[data-scope=toast][data-part=root]")
    expect(toasts).to_have_count(0, timeout=20_000)  # earlier notices gone: the next one is this test's
    with page.expect_response(re.compile(r"/api/v2/connections/test$")) as answer:
        row.get_by_role("button", name="Test Connection").click()
    assert answer.value.status in (200, 400)
    expect(toasts).to_have_count(1)
    return toasts.first


def stored_connection(stack: AirflowStack, conn_id: str) -> dict[str, Any]:
    return dict(stack.api("GET", f"connections/{conn_id}"))


# --- The form -------------------------------------------------------------------------------


def test_the_form_shows_the_cometapi_fields(page: Page, ui_emulator: EmulatorProcess, screenshots: Screenshots):
    dialog = open_new_connection_form(page, CONN_ID)
    # Relabelled standard fields with their placeholders; login and schema hidden.
    for field, label in BEHAVIOUR["relabeling"].items():
        expect(dialog.get_by_label(label, exact=True)).to_have_attribute(
            "placeholder", BEHAVIOUR["placeholders"][field]
        )
    expect(dialog.get_by_label("Port", exact=True)).to_have_attribute("placeholder", BEHAVIOUR["placeholders"]["port"])
    expect(dialog.get_by_label("API key", exact=True)).to_have_attribute("type", "password")
    for hidden in ("Login", "Schema"):
        expect(dialog.get_by_label(hidden, exact=True)).to_have_count(0)
    fill_standard_fields(dialog, base_url=ui_emulator.base_url, api_key=ui_emulator.api_key, port="0")
    screenshots.take(page, "connection-form.png")

    # The extra fields: labels, descriptions and the schema's defaults.
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    for key, field in CONN_FIELDS.items():
        expect(dialog.get_by_text(field["label"], exact=True)).to_be_visible()
        expect(dialog.get_by_text(field["description"], exact=True)).to_be_visible()
        default = field["schema"].get("default")
        expect(dialog.locator(f"input[name=element_{key}]")).to_have_value("" if default is None else str(default))
    link_template = f"{ui_emulator.base_url}/p/{{prediction_id}}"
    dialog.locator("input[name=element_prediction_url_template]").fill(link_template)
    screenshots.take(page, "connection-extra-fields.png")
    # Airflow's own JSON editor of the extra is always there too; hidden-fields cannot hide it.
    expect(dialog.get_by_role("button", name="Extra Fields JSON")).to_be_visible()

    row = save(page, dialog, CONN_ID)
    expect(row).to_contain_text("cometapi")
    expect(row).to_contain_text(ui_emulator.base_url)
    assert ui_emulator.api_key not in page.content()


def test_the_form_stored_what_the_hook_reads(stack: AirflowStack, ui_emulator: EmulatorProcess):
    conn = stored_connection(stack, CONN_ID)
    assert conn["conn_type"] == "cometapi"
    assert conn["host"] == ui_emulator.base_url
    assert conn["port"] == 0
    assert conn["password"] != ui_emulator.api_key  # the API answers it masked
    extra = json.loads(conn["extra"])
    assert extra["prediction_url_template"] == f"{ui_emulator.base_url}/p/{{prediction_id}}"
    assert {"timeout": 60, "connect_timeout": 10, "max_retries": 4}.items() <= extra.items()


# --- The Test button ------------------------------------------------------------------------


def test_the_test_button_succeeds_against_the_emulator(
    page: Page, ui_emulator: EmulatorProcess, screenshots: Screenshots
):
    ui_emulator.reset()
    row = connection_row(page, CONN_ID)
    toast = press_test(page, row)
    expect(toast).to_contain_text("Test Connection Successful")
    expect(toast).to_contain_text(f"Connected to {ui_emulator.base_url}: the API key works")
    expect(row.get_by_role("button", name="Test Connection").locator("svg")).to_have_attribute("color", "green")
    screenshots.take(page, "connection-test.png")
    assert ui_emulator.stats(detail=False)["requests"] == 1


def test_a_wrong_key_fails_with_what_to_fix(page: Page, ui_emulator: EmulatorProcess, screenshots: Screenshots):
    dialog = open_new_connection_form(page, "cometapi_wrong_key")
    fill_standard_fields(dialog, base_url=ui_emulator.base_url, api_key="not-the-key-3141", port="0")
    row = save(page, dialog, "cometapi_wrong_key")
    toast = press_test(page, row)
    expect(toast).to_contain_text("Test Connection Failed")
    expect(toast).to_contain_text("CometAPI rejected the API key")
    # Named as "the connection": Airflow tests a copy under a temporary id.
    expect(toast).to_contain_text("Set a valid key as the password ('API key') of the connection;")
    expect(row.get_by_role("button", name="Test Connection").locator("svg")).to_have_attribute("color", "red")
    screenshots.take(page, "connection-test-wrong-key.png")
    assert "not-the-key-3141" not in page.content()


def test_an_empty_port_is_refused_by_airflow(page: Page, ui_emulator: EmulatorProcess):
    """Airflow 3.3's UI sends port 0 for an empty one, and its API refuses a port that differs."""
    dialog = open_new_connection_form(page, "cometapi_empty_port")
    fill_standard_fields(dialog, base_url=ui_emulator.base_url, api_key=ui_emulator.api_key, port="")
    row = save(page, dialog, "cometapi_empty_port")
    ui_emulator.reset()
    toast = press_test(page, row)
    expect(toast).to_contain_text("Test Connection Failed")
    expect(toast).to_contain_text("Bad Request")
    assert ui_emulator.stats(detail=False)["requests"] == 0  # refused before the hook ran


# --- A task on the connection ---------------------------------------------------------------


def test_the_task_log_and_the_prediction_link(
    page: Page, stack: AirflowStack, ui_emulator: EmulatorProcess, screenshots: Screenshots
):
    ui_emulator.reset()
    run_id = stack.trigger(DAG_ID)
    assert stack.wait_for_run(DAG_ID, run_id) == "success", stack.task_log(DAG_ID, run_id, "generate")
    (prediction_id,) = ui_emulator.stats()["predictions"]

    page.goto(f"/dags/{DAG_ID}/runs/{run_id}/tasks/generate")
    log = page.locator("body")
    expect(log).to_contain_text(f"Created prediction {prediction_id} of model black-forest-labs/flux-schnell.")
    expect(log).to_contain_text(f"Prediction {prediction_id} succeeded with 1 output(s).")
    screenshots.take(page, "task-log.png")
    assert ui_emulator.api_key not in page.content()

    link = f"{ui_emulator.base_url}/p/{prediction_id}"
    links = stack.api("GET", f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/generate/links")
    assert links["extra_links"] == {"CometAPI prediction": link}
    page.goto(f"/dags/{DAG_ID}/runs/{run_id}/tasks/generate/details")
    expect(page.get_by_role("link", name="CometAPI prediction")).to_have_attribute("href", link)
    screenshots.take(page, "task-link.png")
