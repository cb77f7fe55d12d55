"""The lean server: the cheapest answers a poller can get, for the benchmark's floor.

A low-level aiohttp server (``aiohttp.web.Server``: no router, no middlewares, no access log)
that answers the two routes a waiting prediction needs with seed-shaped JSON (the fields of
the ``GET /replicate/v1/predictions/{id}`` answer in CometAPI's documentation, about 700
bytes), pre-encoded per prediction and status. Status follows the clock as in the emulator:
``starting``, then ``processing``, then ``succeeded`` after the prediction's duration. It
counts polls, so CPU per poll is measured the same way as against the emulator.

Beside the emulator, not instead of it: the emulator answers everything a real gateway does
(faults, files, growing logs, retention), the lean server only what lets a client's own cost
show. Run it alone with ``python benchmarks/lean_server.py --port 8766``; the benchmarks use
``LeanServerProcess``.

Routes (bearer key checked on all of them):

- ``POST /replicate/v1/models/{owner}/{name}/predictions`` with ``{"input": {..., "_emulator":
  {"duration": s, "starting_for": s}}}``: 201 and the prediction (``starting``);
- ``GET /replicate/v1/predictions/{id}``: 200 and the prediction, 404 for an unknown id;
- ``GET /_lean/stats``: ``{"creates", "polls"}``; ``POST /_lean/reset``: forget everything;
- ``POST /_lean/restart``: every prediction starts again now (the benchmark calls it as a
  watcher starts, so that creating many predictions on a busy machine does not eat into their
  duration before the first poll).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import selectors
import signal
import string
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from typing import Any

READY_PREFIX = "lean-server listening on "
PREDICTIONS = "/replicate/v1/predictions/"
_ALPHABET = string.ascii_lowercase + string.digits
# The finished prediction's log in the documentation's answer.
_LOG = (
    "Using seed: 60392\nrunning quantized prediction\n 0%| | 0/4 [00:00<?, ?it/s]\n"
    "100%|██████████| 4/4 [00:00<00:00, 14.34it/s]\nTotal safe images: 1 out of 1\n"
)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class _Prediction:
    __slots__ = ("bodies", "created", "duration", "id", "prompt", "starting_for")

    def __init__(self, pid: str, prompt: str, duration: float, starting_for: float) -> None:
        self.id = pid
        self.prompt = prompt
        self.duration = duration
        self.starting_for = min(starting_for, duration)
        self.restart()

    def restart(self) -> None:
        """Start (again) now: the status, and the times in the answers, follow the clock from here."""
        self.created = time.monotonic()
        pid, prompt, duration = self.id, self.prompt, self.duration
        wall = time.time()
        base: dict[str, Any] = {
            "id": pid,
            "model": "black-forest-labs/flux-schnell",
            "version": "hidden",
            "input": {"prompt": prompt},
            "logs": "",
            "output": None,
            "data_removed": False,
            "error": None,
            "source": "api",
            "status": "starting",
            "created_at": _iso(wall),
            "started_at": None,
            "completed_at": None,
            "urls": {
                "cancel": f"https://api.replicate.com/v1/predictions/{pid}/cancel",
                "get": f"https://api.replicate.com/v1/predictions/{pid}",
                "stream": f"https://stream.replicate.com/v1/files/{pid}",
            },
        }
        processing = {**base, "status": "processing", "started_at": _iso(wall + self.starting_for)}
        succeeded = {
            **processing,
            "status": "succeeded",
            "logs": _LOG,
            "output": [f"https://replicate.delivery/lean/{pid}/out-0.webp"],
            "completed_at": _iso(wall + duration),
            "metrics": {"image_count": 1, "predict_time": round(duration - self.starting_for, 6)},
        }
        self.bodies = tuple(_dumps(body) for body in (base, processing, succeeded))

    def body(self, now: float) -> bytes:
        elapsed = now - self.created
        return self.bodies[0 if elapsed < self.starting_for else 1 if elapsed < self.duration else 2]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


class LeanApp:
    def __init__(self, api_key: str, duration: float, starting_for: float) -> None:
        self.bearer = f"Bearer {api_key}"
        self.duration = duration
        self.starting_for = starting_for
        self.predictions: dict[str, _Prediction] = {}
        self.polls = 0
        self.creates = 0

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        if request.headers.get("Authorization") != self.bearer:
            return web.Response(status=401, body=b'{"detail":"Invalid token."}', content_type="application/json")
        path = request.path
        if request.method == "GET" and path.startswith(PREDICTIONS):
            self.polls += 1
            prediction = self.predictions.get(path[len(PREDICTIONS) :])
            if prediction is None:
                return web.Response(status=404, body=b'{"detail":"Not found."}', content_type="application/json")
            return web.Response(body=prediction.body(time.monotonic()), content_type="application/json")
        if request.method == "POST" and path.endswith("/predictions"):
            body = await request.json()
            given = body.get("input") or {}
            control = given.get("_emulator") or {}
            pid = "".join(secrets.choice(_ALPHABET) for _ in range(26))
            prediction = _Prediction(
                pid,
                str(given.get("prompt", "")),
                float(control.get("duration", self.duration)),
                float(control.get("starting_for", self.starting_for)),
            )
            self.predictions[pid] = prediction
            self.creates += 1
            return web.Response(status=201, body=prediction.bodies[0], content_type="application/json")
        if path == "/_lean/stats":
            return web.Response(body=_dumps({"creates": self.creates, "polls": self.polls}))
        if path == "/_lean/restart" and request.method == "POST":
            for prediction in self.predictions.values():
                prediction.restart()
            return web.Response(body=_dumps({"restarted": len(self.predictions)}))
        if path == "/_lean/reset" and request.method == "POST":
            self.predictions.clear()
            self.polls = self.creates = 0
            return web.Response(body=b'{"reset":true}')
        return web.Response(status=404, body=b'{"detail":"Not found."}', content_type="application/json")


async def serve(host: str, port: int, app: LeanApp) -> None:
    from aiohttp import web

    server = web.Server(app.handle, access_log=None)
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
    sys.stdout.write(f"{READY_PREFIX}http://{bound[0]}:{bound[1]}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()
    while not stop.is_set() and os.getppid() == parent:  # ends with the benchmark that started it
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    await runner.cleanup()


class LeanServerProcess:
    """The lean server as a subprocess on a free loopback port (the benchmark's ``EmulatorProcess``)."""

    def __init__(self, api_key: str, duration: float, starting_for: float = 0.5) -> None:
        self.api_key = api_key
        self.command = [
            sys.executable,
            __file__,
            *("--port", "0", "--api-key", api_key, "--duration", str(duration), "--starting-for", str(starting_for)),
        ]
        self.base_url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> LeanServerProcess:
        self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert self._proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout=30):
                self.__exit__()
                raise RuntimeError("the lean server did not start within 30 s")
        line = self._proc.stdout.readline().decode()
        if not line.startswith(READY_PREFIX):
            self.__exit__()
            raise RuntimeError(f"the lean server did not start: {line!r}")
        self.base_url = line[len(READY_PREFIX) :].strip()
        return self

    def __exit__(self, *exc_info: object) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _control(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            self.base_url + path, method=method, headers={"Authorization": f"Bearer {self.api_key}"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def reset(self) -> None:
        self._control("POST", "/_lean/reset")

    def stats(self, detail: bool = False) -> dict[str, int]:
        result: dict[str, int] = self._control("GET", "/_lean/stats")
        return result

    def airflow_env(self, conn_id: str = "cometapi_default") -> dict[str, str]:
        connection = {"conn_type": "cometapi", "password": self.api_key, "host": self.base_url}
        return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(connection)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8766)
    p.add_argument("--api-key", default="bench-key")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--starting-for", type=float, default=0.5)
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="as the emulator's default")
    args = p.parse_args(argv)
    app = LeanApp(args.api_key, args.duration, args.starting_for)
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(serve(args.host, args.port, app))
            return 0
    asyncio.run(serve(args.host, args.port, app))
    return 0


if __name__ == "__main__":
    sys.exit(main())
