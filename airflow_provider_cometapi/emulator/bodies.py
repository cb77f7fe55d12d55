"""Reading a JSON request body with bounds: size, nesting depth, finite numbers.

Anything a client can send that the handlers cannot use becomes a ``BodyError`` with a status
and a reason, so no body ever reaches a handler as a traceback or a 500.
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

# Far above any real model input, far below what the JSON encoder's recursion would choke on.
MAX_DEPTH = 64


class BodyError(Exception):
    """A body the emulator will not take: ``status`` (400 or 413) and a reason for the client."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _too_deep(value: Any) -> bool:
    # Iterative, so checking the depth cannot itself run out of stack.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > MAX_DEPTH:
                    return True
                stack.append((child, depth + 1))
    return False


def parse_json(raw: bytes) -> Any:
    """``raw`` as JSON, or ``BodyError(400)`` saying what is wrong with it; empty is None."""
    if not raw:
        return None
    try:
        value = json.loads(raw, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:
        raise BodyError(400, "Invalid JSON", f"the body is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # also bad UTF-8 (UnicodeDecodeError) and over-long integers
        raise BodyError(400, "Invalid JSON", f"the body is not valid JSON: {exc}") from None
    if isinstance(value, dict | list) and _too_deep(value):
        raise BodyError(400, "Invalid JSON", f"the body is nested more than {MAX_DEPTH} levels deep")
    return value


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, or ``BodyError(413)`` past ``limit``, the application's ``client_max_size``."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        detail = f"the body is larger than {limit} bytes (the emulator's --max-request-bytes)"
        raise BodyError(413, "Request Entity Too Large", detail) from None


async def read_json(request: web.Request, limit: int) -> tuple[bytes, Any]:
    """The raw body and its JSON value (None when empty); ``BodyError`` for anything unusable."""
    raw = await read_body(request, limit)
    return raw, parse_json(raw)
