"""The gallery's HTML: escaped values, quoted links, what each kind of card shows."""

from __future__ import annotations

from datetime import UTC, datetime

from airflow_provider_cometapi.plugins.cometapi import CometAPIPlugin, external_views
from airflow_provider_cometapi.plugins.pages import (
    CARD_ERROR_CHARS,
    FAILED_BEFORE_RESULT,
    Links,
    gallery_page,
    input_value,
    view_page,
)
from airflow_provider_cometapi.plugins.records import TaskRef, assemble, page_of, read_all

LINKS = Links("/cometapi", "my_dag", "manual__2026-01-01T00:00:00+00:00")
HOSTILE = {
    "id": "p1",
    "status": "succeeded",
    "model": "m/<b>",
    "input": {"prompt": '<script>alert(1)</script>"', "seed": 1},
    "output": ['https://cdn.example/a.webp?x="><script>'],
}


def page(*values, states=None, task_id=None, map_index=None):
    cards = assemble(read_all(values, lambda uri: ""))
    return gallery_page(page_of(cards, 1, 60), LINKS, states or {}, task_id=task_id, map_index=map_index), cards


def test_values_from_the_run_are_escaped():
    html, cards = page((TaskRef("t"), HOSTILE))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "m/&lt;b&gt;" in html
    assert "<script>" not in view_page(cards[0], LINKS, TaskRef("t"), {})


def test_links_quote_the_run_id_and_carry_the_map_index():
    assert LINKS.gallery() == "/cometapi/gallery/my_dag/manual__2026-01-01T00%3A00%3A00%2B00%3A00"
    assert LINKS.file(TaskRef("a/b", 2), "p_0.png").endswith("/a%2Fb/files/p_0.png?map_index=2")
    assert "map_index" not in LINKS.view(TaskRef("t"), "p_0")
    assert LINKS.gallery("t", 3, 2).endswith("/t?map_index=3&page=2")


def test_a_stored_image_is_served_by_the_gallery_and_an_unstored_one_by_the_gateway():
    generated = {**HOSTILE, "output": ["https://cdn.example/a.webp"]}
    left_at_gateway = {**HOSTILE, "id": "p2", "output": ["https://cdn.example/b.webp"]}
    html, _ = page((TaskRef("g"), generated), (TaskRef("s"), ["file:///d/p1_0.webp"]), (TaskRef("x"), left_at_gateway))
    assert 'src="/cometapi/gallery/my_dag/manual__2026-01-01T00%3A00%3A00%2B00%3A00/s/files/p1_0.webp"' in html
    assert 'src="https://cdn.example/b.webp"' in html
    assert "expiring" in html and "stored" in html


def test_a_failed_prediction_shows_its_error_not_an_image():
    failed = {**HOSTILE, "status": "failed", "output": None, "error": "NSFW content detected"}
    html, _ = page((TaskRef("g"), failed))
    assert "NSFW content detected" in html and "<img" not in html


def test_a_task_that_failed_before_its_result_says_so():
    html, _ = page((TaskRef("g"), "p7"), states={TaskRef("g"): "failed"})
    assert "failed" in html and FAILED_BEFORE_RESULT.replace("'", "&#x27;") in html


def test_an_empty_page_says_there_is_nothing():
    html, _ = page(task_id="t", map_index=0)
    assert "recorded no images" in html and "Images of t [0]" in html


def test_the_plugin_mounts_the_app_and_adds_two_tabs():
    (app,) = CometAPIPlugin.fastapi_apps
    assert app["url_prefix"] == "/cometapi"
    views = {view["destination"]: view["href"] for view in external_views("/airflow")}
    assert views == {
        "dag_run": "/airflow/cometapi/gallery/{DAG_ID}/{RUN_ID}",
        "task_instance": "/airflow/cometapi/gallery/{DAG_ID}/{RUN_ID}/{TASK_ID}?map_index={MAP_INDEX}",
    }


def test_a_card_shows_the_cost_in_its_currency_and_a_dash_when_unknown():
    priced = {**HOSTILE, "output": ["https://cdn.example/a.webp"], "cost": 0.006, "currency": "EUR"}
    unpriced = {**priced, "id": "p2", "cost": None}
    html, _ = page((TaskRef("g"), priced), (TaskRef("h"), unpriced))
    assert "0.006 EUR" in html
    assert html.count("\u2014") >= 1 and "None" not in html


def test_a_failed_task_shows_the_error_its_operator_recorded_not_a_generic_text():
    # What CreatePredictionOperator leaves when the prediction fails: the bare id and the record.
    record = {"id": "p7", "status": "failed", "error": "NSFW content detected", "model": "m"}
    html, (card,) = page((TaskRef("g"), "p7"), (TaskRef("g"), record), states={TaskRef("g"): "failed"})
    assert card.failed and "NSFW content detected" in html
    assert FAILED_BEFORE_RESULT.replace("'", "&#x27;") not in html and "<img" not in html
    assert "NSFW content detected" in view_page(card, LINKS, TaskRef("g"), {})


def test_a_long_hostile_error_is_escaped_and_cut_on_the_card():
    error = "<img src=x onerror=alert(1)>" + "y" * 3000
    html, (card,) = page((TaskRef("g"), {"id": "p7", "status": "failed", "error": error}))
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "y" * (CARD_ERROR_CHARS + 1) not in html and "\u2026" in html
    full = view_page(card, LINKS, TaskRef("g"), {})
    assert "<img" not in full and "y" * 1900 in full  # the full view shows what was kept (2,000 characters)


LEFT_AT_GATEWAY = {**HOSTILE, "output": ["https://cdn.example/a.webp"], "completed_at": "2026-01-01T00:00:05Z"}


def test_an_output_at_the_gateway_is_expiring_until_an_hour_after_it_completed():
    (card,) = assemble(read_all([(TaskRef("g"), LEFT_AT_GATEWAY)], lambda uri: ""))
    soon = datetime(2026, 1, 1, 0, 59, tzinfo=UTC)
    html = gallery_page(page_of([card], 1, 60), LINKS, {}, now=soon)
    assert '<img src="https://cdn.example/a.webp"' in html
    assert "expiring: not stored" in html and "deletes it at about 2026-01-01 01:00:05 UTC" in html
    assert "shown from the gateway while its URLs last" in html
    assert '<img src="https://cdn.example/a.webp"' in view_page(card, LINKS, TaskRef("g"), {}, now=soon)


def test_an_output_at_the_gateway_past_its_lifetime_is_marked_expired_without_an_image():
    (card,) = assemble(read_all([(TaskRef("g"), LEFT_AT_GATEWAY)], lambda uri: ""))
    later = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
    expired = "The gateway&#x27;s URL expired at 2026-01-01 01:00:05 UTC; store outputs with a destination"
    html = gallery_page(page_of([card], 1, 60), LINKS, {}, now=later)
    assert "<img" not in html and "cdn.example" not in html
    assert expired in html and "expired: not stored" in html and "expiring: not stored" not in html
    assert "1 on this page never stored, their gateway URLs expired" in html
    full = view_page(card, LINKS, TaskRef("g"), {}, now=later)
    assert "<img" not in full and expired in full


def test_the_full_view_shows_input_urls_redacted():
    signed = "https://user:pw@cdn.example/in.png?X-Amz-Signature=abc123&token=t0k#frag"
    model_input = {
        "prompt": "edit this",
        "input_image": signed,
        "image_prompts": [signed, {"mask": "s3://key:secret@bucket/m.png?sig=abc123"}],
        "control": "data:image/png;base64," + "A" * 5000,
        "note": f"see {signed} for the source",
        "seed": 3,
    }
    prediction = {**HOSTILE, "input": model_input, "output": ["https://cdn.example/a.webp"]}
    (card,) = assemble(read_all([(TaskRef("g"), prediction)], lambda uri: ""))
    full = view_page(card, LINKS, TaskRef("g"), {})
    for secret in ("abc123", "t0k", "pw@", "secret@", "frag", "AAAA"):
        assert secret not in full, secret
    assert "https://cdn.example/in.png" in full and "s3://bucket/m.png" in full
    assert "data:image/png;base64,...(5022 chars)" in full and "see https://cdn.example/in.png for the source" in full
    assert "<th>input.seed</th><td>3</td>" in full


def test_input_values_are_cut_and_long_lists_shortened():
    assert input_value("x" * 1000).endswith("\u2026") and len(input_value("x" * 1000)) == 301
    assert input_value(list(range(100)), limit=10_000).endswith("'\u2026']")
    # Deeper than the view walks: left out, not shown unredacted.
    assert input_value({"deep": [[[[["https://x/y?sig=1"]]]]]}) == "{'deep': [[['\u2026']]]}"
