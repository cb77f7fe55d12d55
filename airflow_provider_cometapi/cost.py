"""
What a prediction costs, and budgets that stop a task before it pays for too much.

The prices are the connection's (extra ``prices``: a model id ``owner/name`` -> the price of one
output image, in the extra ``currency``, default ``USD``); there is no built-in price table. A
model without a price has an unknown cost, ``None``, never a guess.

- ``image_count(prediction)``: the images a prediction made, from its ``metrics.image_count``
  when the gateway gives it, else its outputs counted.
- ``cost_of(prediction, prices)``: images x price, ``None`` when unknown (no price, or the
  prediction has not ended).
- ``planned_images(input)``: the most images one prediction of ``input`` makes, known before it
  is created: ``num_outputs``, else 1.
- ``Budget(max_images, max_cost)``: the limits, checked when the DAG is parsed;
  ``BudgetCounter``: a task's running count against them (what earlier tries spent, what has
  ended, what is reserved for predictions in flight), asked before every paid create;
  ``SpendLedger``: that count kept in Airflow's task state store, so a retry knows it.

Amounts are ``Decimal`` inside (0.1 + 0.2 is 0.3 here), and plain floats in results and XComs.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import Any, Protocol, TypeGuard

from airflow_provider_cometapi.exceptions import (
    BudgetExceededError,
    InvalidModelIdError,
    InvalidParameterError,
    InvalidPricesError,
    MissingPriceError,
)
from airflow_provider_cometapi.models import TERMINAL_STATUSES, ModelId, Prediction, normalise_output

DEFAULT_CURRENCY = "USD"
_CURRENCY = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,15}", re.ASCII)
_PRICES_EXAMPLE = '{"black-forest-labs/flux-schnell": 0.003, "black-forest-labs/flux-1.1-pro": 0.04}'
# Renaming this loses what earlier tries recorded under the old key.
SPENT_KEY = "cometapi_spent"


def _is_number(value: Any) -> TypeGuard[int | float]:
    """A finite JSON number: an int or float, not a bool, not NaN or infinite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _where(conn_id: str) -> str:
    return f"connection {conn_id!r}" if conn_id else "the connection"


# --- Prices ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prices:
    """
    The connection's prices: model id (``owner/name``) -> the price of one output image.

    Empty when the connection has none. Reach a hook's as ``hook.settings.prices``.
    """

    per_image: tuple[tuple[str, Decimal], ...] = ()
    currency: str = DEFAULT_CURRENCY

    @classmethod
    def from_extra(cls, prices: Any = None, currency: Any = None, *, conn_id: str = "") -> Prices:
        """
        Read the extras ``prices`` (a JSON object, or its text as the form stores it) and ``currency``.

        :raises InvalidPricesError: not JSON, not an object, a key that is not ``owner/name``,
            a price that is not a finite number >= 0, or a currency that is not a short code.
        """
        return cls(_checked_prices(prices, conn_id), _checked_currency(currency, conn_id))

    @cached_property
    def _by_model(self) -> dict[str, Decimal]:
        return dict(self.per_image)

    def __bool__(self) -> bool:
        return bool(self.per_image)

    def price_of(self, model: str | None) -> Decimal | None:
        """The price of one image of ``model`` (``owner/name``, a ``:version`` ignored), or ``None``."""
        slug = _slug(model)
        return None if slug is None else self._by_model.get(slug)

    def cost(self, model: str | None, images: int) -> float | None:
        """``images`` x the price of ``model``; ``None`` when the model has no price."""
        price = self.price_of(model)
        return None if price is None else float(price * images)


def _slug(model: str | None) -> str | None:
    try:
        return ModelId.parse(model).slug
    except InvalidModelIdError:
        return None


def _checked_prices(value: Any, conn_id: str) -> tuple[tuple[str, Decimal], ...]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return ()
    fix = f"Give a JSON object mapping model ids to the price of one image, for example {_PRICES_EXAMPLE}."
    if isinstance(value, str):
        try:
            value = json.loads(value, object_pairs_hook=_no_duplicates)
        except json.JSONDecodeError as error:
            raise InvalidPricesError(
                f"The extra field 'prices' of {_where(conn_id)} is not valid JSON ({error}). {fix}"
            ) from None
        except _DuplicateKey as duplicate:
            raise InvalidPricesError(
                f"The extra field 'prices' of {_where(conn_id)} names {duplicate.key!r} twice. "
                "Keep one price per model."
            ) from None
    if not isinstance(value, Mapping):
        raise InvalidPricesError(
            f"The extra field 'prices' of {_where(conn_id)} must be a JSON object, got {type(value).__name__} "
            f"{json.dumps(value, default=repr)[:80]}. {fix}"
        )
    checked: dict[str, Decimal] = {}
    for model, price in value.items():
        try:
            model_id = ModelId.parse(model)
        except InvalidModelIdError:
            model_id = None
        if model_id is None or model_id.version is not None or str(model) != model_id.slug:
            raise InvalidPricesError(
                f"The extra field 'prices' of {_where(conn_id)} has the key {str(model)[:80]!r}, which is not a model "
                "id 'owner/name' (without ':version': a price is per model). "
                f"For example {_PRICES_EXAMPLE}."
            )
        if not _is_number(price) or price < 0:
            raise InvalidPricesError(
                f"The price of {model!r} in the extra field 'prices' of {_where(conn_id)} must be a finite number "
                f">= 0 (the price of one output image), got {json.dumps(price, default=repr)[:80]}. "
                f"For example {_PRICES_EXAMPLE}."
            )
        checked[model] = Decimal(repr(float(price)))
    return tuple(sorted(checked.items()))


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _checked_currency(value: Any, conn_id: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_CURRENCY
    if isinstance(value, str) and _CURRENCY.fullmatch(value.strip()):
        return value.strip()
    raise InvalidPricesError(
        f"The extra field 'currency' of {_where(conn_id)} must be a short currency code such as USD, EUR or "
        f"credits (letters, digits, '_' and '-', up to 16), got {json.dumps(value, default=repr)[:80]}."
    )


# --- What one prediction made and cost --------------------------------------------------------


PredictionLike = Prediction | Mapping[str, Any]
# A gateway's ``metrics.image_count`` above this is not believed (the outputs are counted): an
# answer must not turn one prediction into an unbounded cost or exhaust a budget by itself.
MAX_IMAGE_COUNT = 1_000


def image_count(prediction: PredictionLike) -> int:
    """
    The images ``prediction`` made: its ``metrics.image_count`` when the gateway gives one, else its
    outputs counted (a list of URLs, or one URL string).

    Accepts a ``Prediction`` or its dict (an operator's return value, a trigger event's prediction).
    """
    raw = prediction.raw if isinstance(prediction, Prediction) else prediction
    metrics = raw.get("metrics")
    if isinstance(metrics, Mapping):
        count = metrics.get("image_count")
        if _is_number(count) and 0 <= count <= MAX_IMAGE_COUNT and float(count).is_integer():
            return int(count)
    if isinstance(prediction, Prediction):
        return len(prediction.output)
    return len(normalise_output(raw.get("output")))


def _status_of(prediction: PredictionLike) -> Any:
    return prediction.status if isinstance(prediction, Prediction) else prediction.get("status")


def _model_of(prediction: PredictionLike) -> Any:
    return prediction.model if isinstance(prediction, Prediction) else prediction.get("model")


def cost_of(prediction: PredictionLike, prices: Prices, *, model: str | None = None) -> float | None:
    """
    What ``prediction`` cost: its images x the price of its model; ``None`` when unknown.

    Unknown means the model has no price, or the prediction has not ended (its images are not
    all made yet). A prediction that failed without images costs 0.

    :param model: the model asked for (the task's ``model``); else the prediction's own ``model``.
    """
    if _status_of(prediction) not in TERMINAL_STATUSES:
        return None
    return prices.cost(model or _model_of(prediction), image_count(prediction))


def total_cost(costs: Iterable[float | None]) -> float | None:
    """The sum of ``costs``, or ``None`` if any is unknown (a partial sum would understate the total)."""
    total = Decimal(0)
    for cost in costs:
        if cost is None:
            return None
        total += Decimal(repr(float(cost)))
    return float(total)


def planned_images(model_input: Mapping[str, Any]) -> int:
    """
    The most images one prediction of ``model_input`` makes, before it is created.

    ``num_outputs`` when the input sets it, else 1: the default of every FLUX model (the
    single-image ones make one whatever ``num_outputs`` says, so this is then an upper bound).
    Neither CometAPI nor the emulator says a model's defaults; for another model that makes
    several images unasked, set ``num_outputs`` so that its budget is exact.
    """
    value = model_input.get("num_outputs") if isinstance(model_input, Mapping) else None
    if isinstance(value, str):
        value = value.strip()
        value = int(value) if value.isdigit() else None
    if _is_number(value) and value >= 1:
        return math.ceil(value)
    return 1


def format_amount(cost: float | Decimal) -> str:
    """``0.003``, ``1.2``, ``10``: an amount as a person writes it (no exponent, no trailing zeros)."""
    text = f"{Decimal(repr(float(cost))) if isinstance(cost, float) else cost:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def summary(prediction: PredictionLike, prices: Prices, *, model: str | None = None) -> str:
    """
    The task log's closing words on a prediction: ``1 image, 1.8 s predict time, 0.003 USD``.

    Without a price: ``2 images, cost unknown (no price for <model> in the connection's prices)``.
    """
    images = image_count(prediction)
    parts = [f"{images} image{'' if images == 1 else 's'}"]
    metrics = prediction.raw.get("metrics") if isinstance(prediction, Prediction) else prediction.get("metrics")
    predict_time = metrics.get("predict_time") if isinstance(metrics, Mapping) else None
    if _is_number(predict_time):
        parts.append(f"{float(predict_time):.1f} s predict time")
    cost = cost_of(prediction, prices, model=model)
    if cost is None:
        parts.append(f"cost unknown (no price for {model or _model_of(prediction)} in the connection's prices)")
    else:
        parts.append(f"{format_amount(cost)} {prices.currency}")
    return ", ".join(parts)


# --- Budgets --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spend:
    """Images and their cost; ``cost`` is ``None`` when some of the images have no price."""

    images: int = 0
    cost: Decimal | None = Decimal(0)

    @classmethod
    def of(cls, images: int, cost: float | Decimal | None) -> Spend:
        if cost is None:
            return cls(images, None)
        return cls(images, cost if isinstance(cost, Decimal) else Decimal(repr(float(cost))))

    def __add__(self, other: Spend) -> Spend:
        cost = None if self.cost is None or other.cost is None else self.cost + other.cost
        return Spend(self.images + other.images, cost)

    def __sub__(self, other: Spend) -> Spend:
        cost = None if self.cost is None or other.cost is None else self.cost - other.cost
        return Spend(self.images - other.images, cost)

    def described(self, currency: str) -> str:
        images = f"{self.images} image{'' if self.images == 1 else 's'}"
        return images if self.cost is None else f"{images} ({format_amount(self.cost)} {currency})"


@dataclass(frozen=True)
class Budget:
    """
    The most a task may produce: ``max_images`` images, ``max_cost`` in the connection's currency.

    ``None`` means no limit. Build it with ``Budget.of`` to check the values (at DAG parse).
    """

    max_images: int | None = None
    max_cost: Decimal | None = None

    @classmethod
    def of(cls, max_images: Any = None, max_cost: Any = None) -> Budget:
        """
        :raises InvalidParameterError: ``max_images`` not a whole number >= 1, ``max_cost`` not a
            finite number >= 0 (0 allows only models priced 0).
        """
        return cls(_max_images(max_images), _max_cost(max_cost))

    def __bool__(self) -> bool:
        return self.max_images is not None or self.max_cost is not None

    def require_price(self, model: str, prices: Prices, *, conn_id: str = "") -> None:
        """
        Fail unless ``max_cost`` can be kept: the connection must price ``model``.

        :raises MissingPriceError: ``max_cost`` is set and ``model`` has no price.
        """
        if self.max_cost is not None and prices.price_of(model) is None:
            slug = _slug(model) or model
            priced = ", ".join(model for model, _ in prices.per_image[:5]) or "none"
            raise MissingPriceError(
                f"max_cost={format_amount(self.max_cost)} needs the price of one image of {slug}, and the extra field "
                f"'prices' of {_where(conn_id)} has none (priced: {priced}). Add it, for example "
                f'{{"{slug}": 0.003}}, or set max_images instead. Nothing was created.'
            )


def _max_images(value: Any) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise InvalidParameterError(
        f"max_images must be a whole number >= 1 (the most images the task may make), or None, got {value!r}. "
        "Use for example max_images=100."
    )


def _max_cost(value: Any) -> Decimal | None:
    if value is None:
        return None
    if _is_number(value) and value >= 0:
        return Decimal(repr(float(value)))
    raise InvalidParameterError(
        f"max_cost must be a finite number >= 0 (the most the task may spend, in the connection's currency), "
        f"or None, got {value!r}. Use for example max_cost=5."
    )


@dataclass
class BudgetCounter:
    """
    A task's running count against its ``Budget``, asked before every paid create.

    ``spent`` starts at what earlier tries spent (from the ``SpendLedger`` or a batch manifest);
    ``reserve`` counts a prediction about to be created at its planned images; ``settle`` replaces
    that with what it made once it ended; ``release`` takes back a reservation for a create that
    surely made nothing. What is reserved and not settled counts in full: a prediction in flight
    may still make every image it may.

    :param model: the task's model, whose price turns images into cost.
    """

    budget: Budget
    prices: Prices
    model: str
    spent: Spend = field(default_factory=Spend)

    def planned(self, images: int) -> Spend:
        """What ``images`` images of the model cost."""
        return Spend.of(images, self.prices.cost(self.model, images))

    def exceeding(self, images: int) -> str | None:
        """Which limit ``images`` more images would pass, as words; ``None`` when they fit."""
        after = self.spent + self.planned(images)
        limit_images, limit_cost = self.budget.max_images, self.budget.max_cost
        if limit_images is not None and after.images > limit_images:
            return f"max_images={limit_images} allows {max(0, limit_images - self.spent.images)} more"
        if limit_cost is not None and (after.cost is None or after.cost > limit_cost):
            left = max(limit_cost - (self.spent.cost or Decimal(0)), Decimal(0))
            currency = self.prices.currency
            return f"max_cost={format_amount(limit_cost)} {currency} allows {format_amount(left)} {currency} more"
        return None

    def fits(self, images: int) -> bool:
        return self.exceeding(images) is None

    def reserve(self, images: int) -> bool:
        """Count ``images`` about to be created and return True if they fit; else count nothing, return False."""
        if not self.fits(images):
            return False
        self.spent += self.planned(images)
        return True

    def require(self, images: int, *, what: str = "the prediction") -> None:
        """
        ``reserve``, or fail saying which limit ``images`` more would pass.

        :raises BudgetExceededError: the message says what was spent already; nothing was created.
        """
        if self.reserve(images):
            return
        currency = self.prices.currency
        earlier = (
            f" Earlier tries of this task already made {self.spent.described(currency)}." if self.spent.images else ""
        )
        raise BudgetExceededError(
            f"Not creating {what}: it may make {self.planned(images).described(currency)} with {self.model}, and "
            f"{self.exceeding(images)}.{earlier} Nothing was created. Raise the task's max_images or max_cost, or "
            "ask for fewer images (num_outputs).",
            images=images,
            spent=self.spent,
        )

    def settle(self, reserved_images: int, prediction: PredictionLike) -> Spend:
        """Replace the reservation of an ended prediction by what it made, and return that."""
        made = self.planned(image_count(prediction))
        self.spent = self.spent - self.planned(reserved_images) + made
        return made

    def release(self, reserved_images: int) -> None:
        """Take back a reservation whose create surely made nothing."""
        self.spent -= self.planned(reserved_images)


# --- What earlier tries spent ---------------------------------------------------------------


class KeyValueStore(Protocol):
    """What the ledger needs of Airflow's ``context["task_state_store"]``."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...


class SpendLedger:
    """
    What the tries of one task instance spent, in Airflow's task state store (3.3+).

    One record per prediction (``{"images", "cost", "ended"}``), keyed by its id; a create about
    to be sent is recorded first under ``pending-<try>``, at its planned images, so that a try
    that dies before it learns the id (or whose create may have reached the gateway) still
    counts. ``spent()`` sums every record, those not ended in full. The task forgets the ledger
    once it succeeds, as ``resume`` forgets its prediction: clearing a finished task starts
    anew. Without a store (Airflow before 3.3) every try starts from nothing.
    """

    def __init__(self, store: KeyValueStore | None) -> None:
        self.store = store

    def records(self) -> dict[str, dict[str, Any]]:
        if self.store is None:
            return {}
        value = self.store.get(SPENT_KEY)
        predictions = value.get("predictions") if isinstance(value, Mapping) else None
        if not isinstance(predictions, Mapping):
            return {}
        return {str(key): dict(record) for key, record in predictions.items() if isinstance(record, Mapping)}

    def spent(self, *, excluding: str | None = None) -> Spend:
        """What every record but ``excluding`` (the prediction being resumed, if any) spent."""
        total = Spend()
        for key, record in self.records().items():
            if key != excluding:
                total += _spend_of(record)
        return total

    def record(self, key: str, spend: Spend, *, ended: bool, replacing: str | None = None) -> None:
        """Write ``key``'s record (one write), dropping ``replacing`` (the pending record it was)."""
        if self.store is None:
            return
        records = self.records()
        records.pop(replacing or key, None)
        cost = None if spend.cost is None else float(spend.cost)
        records[key] = {"images": spend.images, "cost": cost, "ended": ended}
        self.store.set(SPENT_KEY, {"v": 1, "predictions": records})

    def refresh(self, lookup: Callable[[str], Prediction | None], prices: Prices, model: str) -> None:
        """
        Ask how the predictions of earlier tries not recorded as ended did end, and record it.

        A retry of a try that died while waiting has such records; counted in full they could
        refuse a retry after a prediction that failed without images. ``lookup`` is the hook's
        ``get_prediction`` (``None`` for an id the gateway does not know: it stays counted in
        full, as do pending records and predictions still running).
        """
        for key, record in self.records().items():
            if record.get("ended") or key.startswith("pending-"):
                continue
            prediction = lookup(key)
            if prediction is not None and prediction.is_terminal:
                images = image_count(prediction)
                self.record(key, Spend.of(images, prices.cost(model, images)), ended=True)

    def drop(self, key: str) -> None:
        """Remove a pending record whose create surely made nothing."""
        records = self.records()
        if self.store is not None and records.pop(key, None) is not None:
            self.store.set(SPENT_KEY, {"v": 1, "predictions": records})

    def forget(self) -> None:
        if self.store is not None:
            self.store.delete(SPENT_KEY)


def pending_key(try_number: int) -> str:
    """The ledger key of a create a try is about to send."""
    return f"pending-{try_number}"


def _spend_of(record: Mapping[str, Any]) -> Spend:
    images, cost = record.get("images"), record.get("cost")
    count = images if isinstance(images, int) and not isinstance(images, bool) and images >= 0 else 0
    return Spend.of(count, cost if _is_number(cost) else None)
