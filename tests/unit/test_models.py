from __future__ import annotations

import pytest

from airflow_provider_cometapi.exceptions import (
    GatewayResponseError,
    InvalidInputError,
    InvalidModelIdError,
    InvalidPredictionIdError,
    UnexpectedPredictionError,
)
from airflow_provider_cometapi.models import (
    MAX_LOG_CHARS,
    MAX_LOG_LINES,
    TERMINAL_STATUSES,
    ModelId,
    Prediction,
    PredictionStatus,
    check_prediction_id,
    normalise_output,
    validate_input,
)

FLUX_SCHNELL = ModelId.parse("black-forest-labs/flux-schnell")


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (None, []),
        ("https://x/out-0.webp", ["https://x/out-0.webp"]),
        (["https://x/a.png", "https://x/b.png"], ["https://x/a.png", "https://x/b.png"]),
        ("", []),
        ({"unexpected": "shape"}, []),
        (["data:image/png;base64,AAAA", None], ["data:image/png;base64,AAAA"]),
    ],
)
def test_output_is_always_a_list_of_strings(output, expected):
    assert normalise_output(output) == expected
    assert Prediction.from_api({"id": "p1", "status": "succeeded", "output": output}).output == expected


def test_terminal_set_is_the_documented_one():
    assert {"succeeded", "failed", "canceled", "aborted"} == TERMINAL_STATUSES
    assert PredictionStatus.ABORTED == "aborted"


def test_unknown_status_is_kept_and_not_terminal():
    prediction = Prediction.from_api({"id": "p1", "status": "queued_elsewhere"})
    assert prediction.status == "queued_elsewhere"
    assert not prediction.is_terminal
    assert not prediction.is_known_status
    assert Prediction.from_api({"id": "p1"}).status == "unknown"


@pytest.mark.parametrize("body", [None, [], {"status": "succeeded"}, {"id": ""}, "text"])
def test_a_body_that_is_not_a_prediction_is_a_gateway_error(body):
    with pytest.raises(GatewayResponseError, match="not a prediction"):
        Prediction.from_api(body)


def test_to_dict_drops_logs_and_shortens_data_uris_in_input():
    big = "data:image/png;base64," + "A" * 10_000
    prediction = Prediction.from_api(
        {
            "id": "p1",
            "status": "succeeded",
            "logs": "lots of lines\n" * 100,
            "output": "https://x/out.webp",
            "input": {"prompt": "a cat", "input_image": big},
            "metrics": {"predict_time": 1.5},
        }
    )
    result = prediction.to_dict()
    assert "logs" not in result
    assert result["output"] == ["https://x/out.webp"]
    assert result["metrics"] == {"predict_time": 1.5}
    assert result["input"]["prompt"] == "a cat"
    assert len(result["input"]["input_image"]) < 100
    assert result["input"]["input_image"].endswith(f"({len(big)} chars)")


def test_new_log_lines_returns_only_complete_new_lines():
    first = Prediction.from_api({"id": "p", "status": "processing", "logs": "Using seed: 1\n 25%|"})
    lines, offset, *_ = first.new_log_lines(0)
    assert lines == ["Using seed: 1"]
    second = Prediction.from_api({"id": "p", "status": "processing", "logs": "Using seed: 1\n 25%|x\n 50%|y\n"})
    lines, offset, *_ = second.new_log_lines(offset)
    assert lines == [" 25%|x", " 50%|y"]
    assert second.new_log_lines(offset) == ([], offset, 0, 0)
    rewritten = Prediction.from_api({"id": "p", "status": "processing", "logs": "new\n"})
    assert rewritten.new_log_lines(offset) == (["new"], 4, 0, 0)


@pytest.mark.parametrize(
    ("text", "owner", "name", "version"),
    [
        ("black-forest-labs/flux-schnell", "black-forest-labs", "flux-schnell", None),
        ("black-forest-labs/flux-1.1-pro", "black-forest-labs", "flux-1.1-pro", None),
        ("owner/model:5599ed30703defd1d", "owner", "model", "5599ed30703defd1d"),
    ],
)
def test_model_ids_parse(text, owner, name, version):
    model = ModelId.parse(text)
    assert (model.owner, model.name, model.version) == (owner, name, version)
    assert str(model) == text


@pytest.mark.parametrize(
    "text", ["flux-schnell", "a/b/c", "/flux", "owner/", "owner/name:", "own er/name", "", None, 42, "a/b?x=1"]
)
def test_malformed_model_ids_are_rejected(text):
    with pytest.raises(InvalidModelIdError, match="owner/name"):
        ModelId.parse(text)


@pytest.mark.parametrize("text", ["", " ", "a/b", "../x", "id?x", None, 3])
def test_malformed_prediction_ids_are_rejected(text):
    with pytest.raises(InvalidPredictionIdError, match="prediction_id"):
        check_prediction_id(text)


def test_valid_flux_input_passes_with_unknown_keys():
    model_input = {"prompt": "a cat", "aspect_ratio": "16:9", "output_format": "png", "my_extra": [1]}
    assert validate_input(FLUX_SCHNELL, model_input) == model_input


def test_kontext_accepts_match_input_image():
    kontext = ModelId.parse("black-forest-labs/flux-kontext-pro")
    validate_input(kontext, {"prompt": "x", "aspect_ratio": "match_input_image"})
    with pytest.raises(InvalidInputError):
        validate_input(FLUX_SCHNELL, {"prompt": "x", "aspect_ratio": "match_input_image"})


def test_every_bad_flux_field_is_named():
    with pytest.raises(InvalidInputError) as info:
        validate_input(
            FLUX_SCHNELL,
            {"prompt": " ", "aspect_ratio": "7:5", "output_format": "gif", "output_quality": 0, "num_outputs": 9},
        )
    fields = [f["field"] for f in info.value.invalid_fields]
    assert fields == [
        "input.prompt",
        "input.aspect_ratio",
        "input.output_format",
        "input.output_quality",
        "input.num_outputs",
    ]
    assert "'7:5' is not one of 1:1" in str(info.value)


def test_missing_prompt_and_non_mapping_input():
    with pytest.raises(InvalidInputError, match="input.prompt"):
        validate_input(FLUX_SCHNELL, {})
    with pytest.raises(InvalidInputError, match="must be a mapping"):
        validate_input(FLUX_SCHNELL, "a cat")


def test_other_models_are_not_checked():
    other = ModelId.parse("stability-ai/sdxl")
    assert validate_input(other, {"width": 5000}) == {"width": 5000}


def test_the_last_line_without_newline_is_flushed_when_the_prediction_ends():
    running = Prediction.from_api({"id": "p", "status": "processing", "logs": "a\nfinal words"})
    assert running.new_log_lines(0) == (["a"], 2, 0, 0)
    done = Prediction.from_api({"id": "p", "status": "failed", "logs": "a\nfinal words"})
    assert done.new_log_lines(2) == (["final words"], len("a\nfinal words"), 0, 0)


def test_redux_models_need_no_prompt():
    redux = ModelId.parse("black-forest-labs/flux-redux-schnell")
    assert validate_input(redux, {"redux_image": "https://x/in.png"}) == {"redux_image": "https://x/in.png"}


def test_to_dict_can_shorten_inline_outputs():
    inline = "data:image/png;base64," + "A" * 5000
    prediction = Prediction.from_api({"id": "p", "status": "succeeded", "output": [inline]})
    assert prediction.has_inline_outputs
    assert prediction.to_dict()["output"] == [inline]
    assert len(prediction.to_dict(shorten_outputs=True)["output"][0]) < 100


# --- What a hostile or broken answer cannot do ------------------------------------------


@pytest.mark.parametrize(
    "answered", ["../../dags/evil", "/tmp/x", "a/b", "a.b", "ok\n", "é", "x" * 129, " padded", "-lead"]
)
def test_an_answered_id_that_is_not_an_id_is_refused(answered):
    with pytest.raises(UnexpectedPredictionError, match="not a valid id") as info:
        Prediction.from_api({"id": answered, "status": "succeeded"})
    assert not info.value.transient


def test_an_answer_about_another_prediction_is_refused():
    with pytest.raises(UnexpectedPredictionError, match="not the one asked for"):
        Prediction.from_api({"id": "other", "status": "succeeded"}, expected_id="mine")
    assert Prediction.from_api({"id": "mine", "status": "starting"}, expected_id="mine").id == "mine"


@pytest.mark.parametrize(
    ("value", "removed"), [(True, True), ("true", True), ("false", False), (1, False), (None, False)]
)
def test_data_removed_is_true_only_when_the_gateway_says_true(value, removed):
    assert Prediction.from_api({"id": "p", "status": "succeeded", "data_removed": value}).data_removed is removed


def test_a_huge_log_keeps_only_its_newest_part():
    lines = [f"step {n}" for n in range(200_000)]
    prediction = Prediction.from_api({"id": "p", "status": "succeeded", "logs": "\n".join(lines) + "\n"})
    assert len(prediction.logs) == MAX_LOG_CHARS
    assert prediction.logs_length > 1_000_000
    assert "logs" not in prediction.raw
    new = prediction.new_log_lines(0)
    assert len(new.lines) == MAX_LOG_LINES
    assert new.lines[-1] == "step 199999"
    assert new.dropped_chars > 1_000_000 and new.dropped_lines > 0
    assert new.offset == prediction.logs_length
    # The line cut in half by the cap is not logged as if whole.
    assert all(line.startswith("step ") for line in new.lines)


def test_offsets_count_the_whole_log_across_polls():
    start = "x" * (MAX_LOG_CHARS + 10) + "\n"
    first = Prediction.from_api({"id": "p", "status": "processing", "logs": start + "one\n"})
    lines, offset, dropped, _ = first.new_log_lines(0)
    assert lines == ["one"] and dropped == len(start) and offset == len(start) + 4
    second = Prediction.from_api({"id": "p", "status": "processing", "logs": start + "one\ntwo\n"})
    assert second.new_log_lines(offset) == (["two"], offset + 4, 0, 0)


def test_long_status_error_and_model_strings_are_shortened():
    prediction = Prediction.from_api({"id": "p", "status": "s" * 1000, "error": "e" * 100_000, "model": "m" * 1000})
    assert len(prediction.status) <= 40 and len(prediction.error or "") <= 2000 and len(prediction.model or "") <= 200


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (float("nan"), "input.seed"),
        (float("inf"), "input.seed"),
        ({1, 2}, "input.seed"),
        (b"bytes", "input.seed"),
        (object(), "input.seed"),
        ({"deep": [1, float("-inf")]}, "input.seed.deep[1]"),
        ({1: "x"}, "input.seed key 1"),
    ],
)
def test_input_values_json_cannot_carry_are_refused_before_any_request(value, where):
    for model in ("black-forest-labs/flux-schnell", "someone/other-model"):
        with pytest.raises(InvalidInputError, match="JSON") as info:
            validate_input(ModelId.parse(model), {"prompt": "x", "seed": value})
        assert info.value.invalid_fields[0]["field"] == where


def test_input_nested_too_deep_is_refused():
    nested: object = "leaf"
    for _ in range(100):
        nested = [nested]
    with pytest.raises(InvalidInputError, match="nested deeper"):
        validate_input(ModelId.parse("someone/other-model"), {"prompt": "x", "deep": nested})
