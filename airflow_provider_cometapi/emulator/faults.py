"""Server-level fault rules: parsed from JSON, matched in order, consumed one per request."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KINDS: tuple[str, ...] = ("throttle", "server_error", "error", "slow", "reset", "malformed_json")
ROUTES: tuple[str, ...] = ("create", "get", "cancel", "models", "files", "any")
ENVELOPES: tuple[str, ...] = ("replicate", "openai", "html")
# Only these make sense once the prediction exists: the client must see an ambiguous failure.
AFTER_CREATE_KINDS: tuple[str, ...] = ("server_error", "reset", "slow", "malformed_json")

# Options each kind accepts besides kind, route, count and after_create.
_OPTIONS: dict[str, frozenset[str]] = {
    "throttle": frozenset({"retry_after", "header", "body", "message"}),
    "server_error": frozenset({"status", "html", "message"}),
    "error": frozenset({"status", "envelope", "message", "type", "code"}),
    "slow": frozenset({"delay"}),
    "reset": frozenset({"partial"}),
    "malformed_json": frozenset(),
}


class FaultRuleError(ValueError):
    """A fault rule that cannot be installed; the message says why."""


@dataclass(slots=True)
class FaultRule:
    kind: str
    route: str = "any"
    count: int = 1  # -1 = until cleared
    after_create: bool = False
    status: int = 0
    retry_after: float = 1.0
    header: bool = True
    body: bool = True
    html: bool = True
    envelope: str = "replicate"
    message: str | None = None
    type: str | None = None
    code: str | None = None
    delay: float = 1.0
    partial: bool = True
    served: int = 0

    def matches(self, route: str) -> bool:
        if self.count == 0:
            return False
        if self.after_create:
            return route == "create"
        return self.route == "any" or self.route == route

    def consume(self) -> None:
        if self.count > 0:
            self.count -= 1
        self.served += 1

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "route": self.route,
            "count": self.count,
            "served": self.served,
        }
        if self.after_create:
            out["after_create"] = True
        if self.kind == "throttle":
            out.update(retry_after=self.retry_after, header=self.header, body=self.body)
        elif self.kind == "server_error":
            out.update(status=self.status, html=self.html)
        elif self.kind == "error":
            out.update(status=self.status, envelope=self.envelope)
        elif self.kind == "slow":
            out["delay"] = self.delay
        elif self.kind == "reset":
            out["partial"] = self.partial
        for key in ("message", "type", "code"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def _bool(raw: Mapping[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise FaultRuleError(f"{key} must be true or false")
    return value


def _number(raw: Mapping[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise FaultRuleError(f"{key} must be a number >= 0")
    return float(value)


def _status(raw: Mapping[str, Any], default: int, low: int, high: int) -> int:
    value = raw.get("status", default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FaultRuleError(f"status must be an integer {low}..{high}")
    return value


def _text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise FaultRuleError(f"{key} must be a string")
    return value


def parse_rule(raw: Any) -> FaultRule:
    """Validate one rule strictly, so a typo in a test fails loudly instead of doing nothing."""
    if not isinstance(raw, Mapping):
        raise FaultRuleError("a fault rule must be a JSON object")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise FaultRuleError("kind must be one of: " + ", ".join(KINDS))
    unknown = set(raw) - {"kind", "route", "count", "after_create"} - _OPTIONS[kind]
    if unknown:
        raise FaultRuleError(f"unknown option(s) for kind {kind!r}: {', '.join(sorted(unknown))}")
    route = raw.get("route", "any")
    if route not in ROUTES:
        raise FaultRuleError("route must be one of: " + ", ".join(ROUTES))
    count = raw.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < -1 or count == 0:
        raise FaultRuleError("count must be a positive integer or -1 (until cleared)")
    after_create = _bool(raw, "after_create", False)
    if after_create:
        if kind not in AFTER_CREATE_KINDS:
            raise FaultRuleError("after_create works with kinds: " + ", ".join(AFTER_CREATE_KINDS))
        if route not in ("create", "any"):
            raise FaultRuleError("after_create needs route 'create'")
        route = "create"

    rule = FaultRule(kind=kind, route=route, count=count, after_create=after_create)
    rule.message = _text(raw, "message")
    if kind == "throttle":
        rule.status = 429
        rule.retry_after = _number(raw, "retry_after", 1.0)
        rule.header = _bool(raw, "header", True)
        rule.body = _bool(raw, "body", True)
    elif kind == "server_error":
        rule.status = _status(raw, 502, 500, 599)
        rule.html = _bool(raw, "html", True)
    elif kind == "error":
        rule.status = _status(raw, 500, 400, 599)
        envelope = raw.get("envelope", "replicate")
        if envelope not in ENVELOPES:
            raise FaultRuleError("envelope must be one of: " + ", ".join(ENVELOPES))
        rule.envelope = envelope
        rule.type = _text(raw, "type")
        rule.code = _text(raw, "code")
    elif kind == "slow":
        rule.delay = _number(raw, "delay", 1.0)
    elif kind == "reset":
        rule.partial = _bool(raw, "partial", True)
    return rule


class FaultBook:
    """The ordered rules; empty most of the time, so the hot path checks one attribute."""

    def __init__(self) -> None:
        self.rules: list[FaultRule] = []

    def add(self, raw: Any) -> FaultRule:
        rule = parse_rule(raw)
        self.rules.append(rule)
        return rule

    def clear(self) -> int:
        n = len(self.rules)
        self.rules.clear()
        return n

    def match(self, route: str) -> FaultRule | None:
        """The first rule with count left that applies to ``route``; not consumed yet."""
        for rule in self.rules:
            if rule.matches(route):
                return rule
        return None
