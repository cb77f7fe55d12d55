"""``cometapi-emulator`` / ``python -m airflow_provider_cometapi.emulator``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from airflow_provider_cometapi.emulator.config import API_KEY_ENV, MIB, EmulatorConfig, default_api_key
from airflow_provider_cometapi.emulator.faults import FaultRuleError, parse_rule

READY_PREFIX = "cometapi-emulator listening on "


def _fault_arg(text: str) -> Mapping[str, Any]:
    try:
        raw = json.loads(text)
        parse_rule(raw)  # validated here so a bad rule stops the CLI with a clear message
    except (ValueError, FaultRuleError) as exc:
        raise argparse.ArgumentTypeError(f"invalid fault rule {text!r}: {exc}") from exc
    assert isinstance(raw, Mapping)
    return raw


def _at_least(convert: Callable[[str], float], minimum: float, kind: str) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text and refuse values below ``minimum``."""

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not {kind}: {text!r}") from exc
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum:g}")
        return value

    return parse


_non_negative = _at_least(float, 0, "a number")
_positive_int = _at_least(int, 1, "an integer")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cometapi-emulator",
        description="A local CometAPI-compatible server (Replicate-style image predictions) for demos and tests.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port to bind; 0 picks a free one (default 8765)")
    p.add_argument(
        "--api-key",
        default=None,
        help=f"the accepted bearer key (default: ${API_KEY_ENV}, else 'emulator-key')",
    )
    p.add_argument(
        "--control-token",
        default=None,
        help="the bearer the /_emulator/ control routes take instead of the API key (default: the API key)",
    )
    p.add_argument("--duration", type=_non_negative, default=3.0, help="seconds from create to terminal (default 3.0)")
    p.add_argument(
        "--starting-for",
        type=_non_negative,
        default=0.3,
        help="seconds in 'starting' before 'processing' (default 0.3, capped at --duration)",
    )
    p.add_argument(
        "--output-ttl",
        type=_non_negative,
        default=3600.0,
        help="seconds after completion until outputs expire (default 3600)",
    )
    p.add_argument(
        "--forget-after",
        type=_non_negative,
        default=600.0,
        help="seconds after outputs expired until the prediction is forgotten, then 404 (default 600)",
    )
    p.add_argument(
        "--max-predictions",
        type=_positive_int,
        default=100_000,
        help="predictions kept at most; past it the longest-finished are forgotten (default 100000)",
    )
    p.add_argument(
        "--max-stored-bytes",
        type=_positive_int,
        default=64 * MIB,
        help="create-body bytes kept at most over all predictions, forgotten likewise (default 64 MiB)",
    )
    p.add_argument(
        "--max-request-bytes",
        type=_positive_int,
        default=8 * MIB,
        help="largest request body accepted; larger ones get 413 (default 8 MiB)",
    )
    p.add_argument(
        "--create-limit",
        type=_at_least(float, 0.001, "a number"),
        default=None,
        metavar="N",
        help="creates a minute each key may make, then 429 with Retry-After (default: no limit; Replicate: 600)",
    )
    p.add_argument(
        "--create-burst",
        type=_positive_int,
        default=None,
        metavar="B",
        help="creates a key may send at once under --create-limit (default: one second's worth, at least 1)",
    )
    p.add_argument("--image-size", type=int, default=512, help="long side of images in px (default 512)")
    p.add_argument(
        "--fault",
        type=_fault_arg,
        action="append",
        default=[],
        metavar="JSON",
        help="install a fault rule at start (same schema as POST /_emulator/faults); repeatable",
    )
    p.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop: uvloop when installed (auto, the default) roughly doubles throughput",
    )
    p.add_argument("--no-cancel", action="store_true", help="answer 404 to cancel, as CometAPI may")
    p.add_argument("--access-log", action="store_true", help="log every request to stderr (slower)")
    p.add_argument(
        "--exit-with-parent",
        nargs="?",
        type=int,
        const=0,
        default=None,
        metavar="PID",
        help="stop when the process that started the emulator goes away (used by test harnesses); "
        "PID, that process's pid, also catches one that died before the emulator was up",
    )
    return p


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key or default_api_key(),
        duration=args.duration,
        starting_for=args.starting_for,
        output_ttl=args.output_ttl,
        image_size=args.image_size,
        faults=tuple(args.fault),
        access_log=args.access_log,
        cancel_supported=not args.no_cancel,
        control_token=args.control_token,
        forget_after=args.forget_after,
        max_predictions=args.max_predictions,
        max_stored_bytes=args.max_stored_bytes,
        max_request_bytes=args.max_request_bytes,
        create_limit=args.create_limit,
        create_burst=args.create_burst,
    )


def _loop_runner(choice: str, parser: argparse.ArgumentParser) -> Callable[[Coroutine[Any, Any, None]], None]:
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                parser.error("--loop uvloop: uvloop is not installed")
        else:
            return uvloop.run
    return asyncio.run


def main(argv: Sequence[str] | None = None) -> int:
    # First of all, so that a parent that dies while the emulator starts is not missed.
    started_by = os.getppid()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))

    from airflow_provider_cometapi.emulator.server import serve

    def announce(url: str) -> None:
        # Exactly one line, flushed: harnesses wait for it to learn the bound port.
        sys.stdout.write(f"{READY_PREFIX}{url}\n")
        sys.stdout.flush()

    run = _loop_runner(args.loop, parser)
    try:
        run(
            serve(
                config,
                announce=announce,
                exit_with_parent=args.exit_with_parent is not None,
                parent_pid=args.exit_with_parent or started_by,
            )
        )
    except KeyboardInterrupt:  # a SIGINT before the loop installed its handler
        pass
    except OSError as exc:
        print(f"cometapi-emulator: cannot serve on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
