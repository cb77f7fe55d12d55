"""Settings of the emulator, shared by the CLI, ``create_app`` and the tests."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_cometapi.emulator.ratelimit import check_limit

DEFAULT_API_KEY = "emulator-key"
API_KEY_ENV = "COMETAPI_EMULATOR_API_KEY"
MIB = 1024 * 1024


def default_api_key() -> str:
    """The key the CLI uses when ``--api-key`` is not given."""
    return os.environ.get(API_KEY_ENV) or DEFAULT_API_KEY


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything that shapes how the emulator answers.

    Times are in seconds. ``faults`` holds rules in the schema of ``POST /_emulator/faults``;
    they are installed when the application is created. ``control_token`` is the bearer the
    ``/_emulator/`` routes take instead of ``api_key`` (None: the API key). A finished prediction
    is forgotten ``forget_after`` seconds after its outputs expired, or earlier when more than
    ``max_predictions`` are kept or their create bodies add up to more than ``max_stored_bytes``.
    ``create_limit`` is the creates a minute each key may make (``None``: no limit), with bursts
    of ``create_burst`` (default one second's worth); see ``ratelimit.py``.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    api_key: str = DEFAULT_API_KEY
    duration: float = 3.0
    starting_for: float = 0.3
    output_ttl: float = 3600.0
    image_size: int = 512
    faults: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)
    access_log: bool = False
    cancel_supported: bool = True
    control_token: str | None = None
    forget_after: float = 600.0
    max_predictions: int = 100_000
    max_stored_bytes: int = 64 * MIB
    max_request_bytes: int = 8 * MIB
    create_limit: float | None = None
    create_burst: int | None = None

    def __post_init__(self) -> None:
        check_limit(self.create_limit, self.create_burst)
        if not self.api_key:
            raise ValueError("api_key must not be empty")
        if self.control_token == "":
            raise ValueError("control_token must not be empty (None means: the API key)")
        for name, minimum in _MINIMUMS.items():
            if getattr(self, name) < minimum:
                raise ValueError(f"{name} must be >= {minimum}")
        if self.max_stored_bytes < self.max_request_bytes:
            raise ValueError("max_stored_bytes must be >= max_request_bytes (one create must fit)")
        if not 16 <= self.image_size <= 4096:
            raise ValueError("image_size must be between 16 and 4096")
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be between 0 and 65535")

    @property
    def effective_starting_for(self) -> float:
        """``starting_for`` never outlasts the whole prediction."""
        return min(self.starting_for, self.duration)


# The smallest value each numeric setting takes.
_MINIMUMS: dict[str, float] = {
    "duration": 0,
    "starting_for": 0,
    "output_ttl": 0,
    "forget_after": 0,
    "max_predictions": 1,
    "max_request_bytes": 1024,
}
