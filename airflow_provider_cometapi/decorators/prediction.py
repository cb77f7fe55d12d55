"""
``@task.cometapi``: a function that returns a model input becomes a ``CreatePredictionOperator`` task.

::

    @task.cometapi(model="black-forest-labs/flux-schnell", deferrable=True)
    def generate(subject: str) -> dict[str, Any]:
        return {"prompt": f"{subject}, watercolor", "aspect_ratio": "16:9"}

    prediction = generate("a lighthouse")  # an XComArg: the finished prediction dict
    generate.expand(subject=["a fox", "a owl"])  # one prediction per subject

The task is a ``CreatePredictionOperator`` whose ``input`` is what the function returned: the
same arguments, XComs, waiting, durability and extra link. Airflow finds the decorator through
the provider info; ``cometapi_task`` is the same decorator, importable with its full signature
for an IDE or a type checker (``@task.cometapi`` is typed by Airflow as a generic decorator).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, overload

from airflow.providers.common.compat.sdk import (
    DecoratedOperator,
    context_merge,
    determine_kwargs,
    task_decorator_factory,
)

from airflow_provider_cometapi import parameters
from airflow_provider_cometapi.cost import Budget
from airflow_provider_cometapi.exceptions import InvalidInputError
from airflow_provider_cometapi.models import ModelId, validate_input
from airflow_provider_cometapi.operators.prediction import CreatePredictionOperator

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context
    from airflow.sdk.bases.decorator import Task

P = ParamSpec("P")
# What the decorated function returns: the model's input, or a prompt meaning {"prompt": ...}.
ModelInput = Mapping[str, Any] | str

# Checked when the decorator is applied, i.e. when the DAG file is parsed, also for a task that is
# only mapped later (`.expand()` builds no operator before the run).
_PARSE_CHECKS: Mapping[str, Callable[[Any], Any]] = {
    "poll_interval": parameters.poll_interval,
    "timeout": lambda value: parameters.duration("timeout", value),
    "prefer_wait": parameters.prefer_wait,
    "max_images": lambda value: Budget.of(max_images=value),
    "max_cost": lambda value: Budget.of(max_cost=value),
    "cancel_after": parameters.cancel_after,
}
_SHOWN_INPUT_CHARS = 1000


class _CometAPIDecoratedOperator(DecoratedOperator, CreatePredictionOperator):
    """
    A ``CreatePredictionOperator`` whose input is the return value of a Python callable.

    The callable runs on the worker with its arguments resolved (XComArgs pulled, templates
    rendered); what it returns is never rendered as a template, so a prompt may hold ``{{``.

    :param python_callable: returns the model input: a dict, or a string meaning ``{"prompt": s}``.
    :param op_args: positional arguments of the callable (templated).
    :param op_kwargs: keyword arguments of the callable (templated).
    """

    # The input is computed in execute, so it is not a template field (and is not re-rendered).
    template_fields: Sequence[str] = (*DecoratedOperator.template_fields, "model")
    template_fields_renderers: ClassVar[dict[str, str]] = {**DecoratedOperator.template_fields_renderers}
    custom_operator_name: str = "@task.cometapi"

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if inspect.iscoroutinefunction(python_callable):
            raise TypeError(
                f"@task.cometapi needs a plain function, and {python_callable.__name__} is `async def`. "
                "Return the input from a `def`; the waiting is done for you (deferred, with deferrable=True)."
            )
        if "input" in kwargs:
            raise TypeError("@task.cometapi takes the input from the function's return value: remove `input=`.")
        super().__init__(
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            input={},  # replaced by the callable's return value in execute
            **kwargs,
        )

    def execute(self, context: Context) -> Any:
        context_merge(context, self.op_kwargs)
        kwargs = determine_kwargs(self.python_callable, self.op_args, context)
        self.input = self._model_input(self.python_callable(*self.op_args, **kwargs))
        self.log.info("%s() returned the input %s", self._function_name, _shown(self.input))
        # DecoratedOperator.execute, then CreatePredictionOperator.execute: create, wait, return.
        return super().execute(context)

    @property
    def _function_name(self) -> str:
        return getattr(self.python_callable, "__name__", "the function")

    def _model_input(self, value: Any) -> dict[str, Any]:
        """The callable's return value as a checked input, before anything is paid for."""
        name = self._function_name
        expected = "a dict such as {'prompt': '...', 'aspect_ratio': '16:9'}, or a prompt string"
        if isinstance(value, str):
            if not value.strip():
                raise InvalidInputError(f"{name}() returned an empty prompt. Return {expected}.")
            value = {"prompt": value}
        elif value is None:
            raise InvalidInputError(
                f"{name}() returned None; a @task.cometapi function returns the model input, {expected}. "
                "Is a `return` missing?"
            )
        elif not isinstance(value, Mapping):
            raise InvalidInputError(
                f"{name}() returned {type(value).__name__} {_shown(value, 80)}; a @task.cometapi function "
                f"returns the model input, {expected}."
            )
        try:
            return validate_input(ModelId.parse(self.model), value)
        except InvalidInputError as error:
            raise InvalidInputError(
                f"{name}() returned an input that cannot be sent. {error}", invalid_fields=error.invalid_fields
            ) from None


def _shown(value: Any, limit: int = _SHOWN_INPUT_CHARS) -> str:
    try:
        text = json.dumps(value, default=repr, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


@overload
def cometapi_task(
    python_callable: None = None,
    *,
    model: str,
    cometapi_conn_id: str = ...,
    wait_for_completion: bool = ...,
    deferrable: bool = ...,
    poll_interval: float | timedelta = ...,
    timeout: float | timedelta = ...,
    prefer_wait: int | None = ...,
    cancel_on_kill: bool = ...,
    durable: bool = ...,
    max_images: int | None = ...,
    max_cost: float | None = ...,
    cancel_after: float | timedelta | None = ...,
    **kwargs: Any,
) -> Callable[[Callable[P, ModelInput]], Task[P, ModelInput]]: ...


@overload
def cometapi_task(
    python_callable: Callable[P, ModelInput],
    *,
    model: str,
    cometapi_conn_id: str = ...,
    wait_for_completion: bool = ...,
    deferrable: bool = ...,
    poll_interval: float | timedelta = ...,
    timeout: float | timedelta = ...,
    prefer_wait: int | None = ...,
    cancel_on_kill: bool = ...,
    durable: bool = ...,
    max_images: int | None = ...,
    max_cost: float | None = ...,
    cancel_after: float | timedelta | None = ...,
    **kwargs: Any,
) -> Task[P, ModelInput]: ...


def cometapi_task(python_callable: Callable[..., Any] | None = None, *, model: str, **kwargs: Any) -> Any:
    """
    Turn a function that returns a model input into a task that creates the prediction and waits for it.

    The function receives its arguments resolved (XComArgs become their values, context keys
    such as ``params`` or ``ti`` are filled in) and returns the model input: a dict, or a string
    meaning ``{"prompt": s}``. The task then behaves exactly as ``CreatePredictionOperator``
    with that input: it pushes XCom ``prediction_id`` as soon as the prediction exists, waits
    (in the triggerer with ``deferrable=True``), and returns the finished prediction dict with its
    ``cost`` and ``currency``, which ``SavePredictionOutputsOperator(prediction_id=...)`` accepts
    as it is. ``.expand()`` and ``.partial()`` map over the function's arguments.

    A return value that is not a dict or a non-empty string, or holds values JSON cannot carry,
    or known FLUX fields with impossible values, fails the task with ``InvalidInputError``
    before any request. ``poll_interval``, ``timeout``, ``prefer_wait``, ``max_images`` and
    ``max_cost`` are checked when the decorator is applied, at DAG parse (``InvalidParameterError``).

    :param model: ``owner/name`` or ``owner/name:version``. Templated.
    :param cometapi_conn_id: the CometAPI connection.
    :param wait_for_completion: wait for the prediction to end (default); if False, return it
        as just created.
    :param deferrable: wait in the triggerer; defaults as ``CreatePredictionOperator``'s does,
        to Airflow's ``[operators] default_deferrable``.
    :param poll_interval: seconds (or a timedelta) between status checks.
    :param timeout: how long to wait before cancelling the prediction and failing the task.
    :param prefer_wait: 1-60: let the gateway hold the create call until the prediction is done.
    :param cancel_on_kill: cancel the prediction when the task is killed.
    :param durable: on Airflow 3.3+, a retry resumes the prediction of the earlier try. The
        function runs again on a retry; it resumes when it returns the same input.
    :param max_images: the most images the task may make (all tries together); a create that
        could make more fails with ``BudgetExceededError`` before it is sent.
    :param max_cost: the most the task may spend, in the connection's currency; the model needs a
        price in the connection (``MissingPriceError`` otherwise, before any request).
    :param cancel_after: off by default; seconds sent as the ``Cancel-After`` header (see
        ``CreatePredictionOperator``).
    :param kwargs: any other ``BaseOperator`` argument (``task_id``, ``retries``, ``pool``...).
        ``multiple_outputs`` is not one: the task's return value is one prediction dict.
    """
    if "input" in kwargs:
        raise TypeError("@task.cometapi takes the input from the function's return value: remove `input=`.")
    if kwargs.pop("multiple_outputs", None):
        raise TypeError(
            "@task.cometapi returns one prediction dict, as CreatePredictionOperator does: remove "
            "`multiple_outputs`. Read a field downstream with `.map(lambda p: p['output'])` or in a @task."
        )
    for name, check in _PARSE_CHECKS.items():
        if name in kwargs:
            check(kwargs[name])
    return task_decorator_factory(
        python_callable=python_callable,
        # Never inferred from the function's `-> dict` annotation: that is the input, not the result.
        multiple_outputs=False,
        decorated_operator_class=_CometAPIDecoratedOperator,
        model=model,
        **kwargs,
    )
