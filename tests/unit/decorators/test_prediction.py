"""@task.cometapi without a DAG run: registration, parse-time checks, and the return value made an input."""

from __future__ import annotations

import datetime
import math
from typing import Any

import pytest
from airflow.sdk import DAG, task

from airflow_provider_cometapi.decorators.prediction import _CometAPIDecoratedOperator, cometapi_task
from airflow_provider_cometapi.exceptions import InvalidInputError, InvalidParameterError
from airflow_provider_cometapi.operators.prediction import CreatePredictionOperator
from tests.fixtures import TaskInstance

SCHNELL = "black-forest-labs/flux-schnell"
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


@pytest.fixture
def dag():
    with DAG("unit_decorator", schedule=None, start_date=START) as dag:
        yield dag


def test_airflow_finds_the_decorator_through_the_provider_info():
    # Airflow looks `task.<name>` up in every provider's `task-decorators`.
    assert task.cometapi is cometapi_task


def test_the_task_is_a_create_prediction_operator(dag):
    @task.cometapi(model=SCHNELL, deferrable=True, poll_interval=2, timeout=60, retries=3)
    def generate(subject: str) -> dict[str, Any]:
        """The docs of the task."""
        return {"prompt": subject}

    operator = generate("a fox").operator
    assert isinstance(operator, CreatePredictionOperator)
    assert (operator.task_id, operator.model, operator.deferrable, operator.retries) == ("generate", SCHNELL, True, 3)
    assert (operator.poll_interval, operator.timeout) == (2.0, 60.0)
    assert operator.template_fields == ("op_args", "op_kwargs", "model")
    assert [link.name for link in operator.operator_extra_links] == ["CometAPI prediction"]
    # `-> dict` is the function's input, not the task's result: never unrolled into XComs.
    assert operator.multiple_outputs is False
    assert operator.doc_md == "The docs of the task."


def test_defaults_are_the_operators(dag):
    @task.cometapi(model=SCHNELL)
    def generate() -> str:
        return "x"

    operator = generate().operator
    reference = CreatePredictionOperator(task_id="reference", model=SCHNELL, input={})
    for name in ("cometapi_conn_id", "wait_for_completion", "deferrable", "poll_interval", "timeout", "durable"):
        assert getattr(operator, name) == getattr(reference, name), name


def test_expand_and_partial_map_over_the_functions_arguments(dag):
    @task.cometapi(model=SCHNELL, deferrable=True)
    def generate(subject: str, style: str) -> str:
        return f"{subject}, {style}"

    mapped = generate.partial(style="ink").expand(subject=["a cat", "a dog"]).operator
    assert mapped.operator_class is _CometAPIDecoratedOperator
    assert mapped.partial_kwargs["op_kwargs"] == {"style": "ink"}
    assert mapped.partial_kwargs["model"] == SCHNELL


@pytest.mark.parametrize(
    ("arguments", "name"),
    [({"timeout": 0}, "timeout"), ({"poll_interval": math.nan}, "poll_interval"), ({"prefer_wait": 90}, "prefer_wait")],
)
def test_waiting_arguments_are_checked_when_the_decorator_is_applied(arguments, name):
    # Before any task is made: a mapped task is made only at run time.
    with pytest.raises(InvalidParameterError, match=name):
        cometapi_task(model=SCHNELL, **arguments)


def test_the_input_comes_only_from_the_function():
    with pytest.raises(TypeError, match="remove `input=`"):
        cometapi_task(model=SCHNELL, input={"prompt": "x"})
    with pytest.raises(TypeError, match="remove `multiple_outputs`"):
        cometapi_task(model=SCHNELL, multiple_outputs=True)


def test_an_async_function_is_refused_at_parse(dag):
    @task.cometapi(model=SCHNELL)
    async def generate() -> str:
        return "x"

    with pytest.raises(TypeError, match="async def"):
        generate()


# --- The return value, made the model input before any request -------------------------------


def run(function: Any, model: str = SCHNELL) -> dict[str, Any]:
    """The operator's input after execute called the function; the create itself is stubbed."""
    with DAG("unit_decorator_run", schedule=None, start_date=START):
        operator = cometapi_task(model=model, task_id="generate", wait_for_completion=False)(function)().operator
    created: list[dict[str, Any]] = []

    def create(model: str, model_input: dict[str, Any], wait: int | None = None, **_: Any) -> Any:
        created.append(model_input)
        raise RuntimeError("stop here: the input was made")

    operator.hook.create_prediction = create
    with pytest.raises(RuntimeError, match="stop here"):
        operator.execute({"ti": TaskInstance()})
    (model_input,) = created
    return model_input


def test_a_dict_is_the_input():
    assert run(lambda: {"prompt": "a fox", "seed": 3}) == {"prompt": "a fox", "seed": 3}


def test_a_string_is_the_prompt():
    assert run(lambda: "a fox") == {"prompt": "a fox"}


def test_other_models_take_any_json_input():
    assert run(lambda: {"text": "hello"}, model="acme/speech") == {"text": "hello"}


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (None, r"returned None.*Is a `return` missing\?"),
        (["a fox"], r"returned list \[\"a fox\"\]"),
        (42, "returned int 42"),
        ("   ", "returned an empty prompt"),
        ({"prompt": "x", "seed": {1, 2}}, "input.seed is a set, which JSON cannot carry"),
        ({"prompt": "x", "guidance": math.inf}, "input.guidance is inf"),
        ({"prompt": "x", 1: "one"}, "input key 1"),
        ({"prompt": "x", "aspect_ratio": "7:3"}, "aspect_ratio: '7:3' is not one of"),
        ({"aspect_ratio": "1:1"}, "prompt: a non-empty text prompt is required"),
    ],
    ids=repr,
)
def test_a_bad_return_value_fails_before_any_request(returned, message):
    def generate() -> Any:
        return returned

    with DAG("unit_decorator_bad", schedule=None, start_date=START):
        operator = cometapi_task(model=SCHNELL)(generate)().operator
    operator.hook.create_prediction = pytest.fail  # never reached
    with pytest.raises(InvalidInputError, match=message) as caught:
        operator.execute({"ti": TaskInstance()})
    assert str(caught.value).startswith("generate() returned")
