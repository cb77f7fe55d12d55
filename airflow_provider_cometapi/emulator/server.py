"""The aiohttp application: CometAPI's Replicate-compatible routes plus ``/_emulator/`` controls.

Handlers check auth and faults inline instead of through middlewares: a middleware costs a
coroutine frame per request, and the poll route is the benchmark's hot path. The control
routes take the API key, or the control token when one is set; output files take neither
(like a CDN's signed URLs) but carry a per-prediction secret in their path.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from airflow_provider_cometapi.emulator import images
from airflow_provider_cometapi.emulator.bodies import BodyError, read_json
from airflow_provider_cometapi.emulator.config import EmulatorConfig
from airflow_provider_cometapi.emulator.faults import FaultRule, FaultRuleError
from airflow_provider_cometapi.emulator.models import MODELS, InvalidField, split_model_ref, validate_input
from airflow_provider_cometapi.emulator.ratelimit import retry_after_header
from airflow_provider_cometapi.emulator.state import Prediction, Store

STORE_KEY = web.AppKey("cometapi_emulator_store", Store)
# Longest outage the control route accepts: tests must not be able to lose the emulator.
MAX_OUTAGE_SECONDS = 300.0
# How often finished predictions past their time are forgotten; a sweep with nothing due is one comparison.
SWEEP_INTERVAL = 0.25

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

JSON_TYPE = "application/json"
_FILE_RE = re.compile(r"out-(\d+)\.([a-z]+)")
_REASONS: dict[int, str] = {
    520: "Web Server Returned an Unknown Error",
    521: "Web Server Is Down",
    522: "Connection Timed Out",
    523: "Origin Is Unreachable",
    524: "A Timeout Occurred",
}


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return _REASONS.get(status, "Error")


def json_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # aiohttp knows the reason phrase of standard codes; only CDN codes like 524 need ours.
    reason = _REASONS.get(status) if status >= 520 else None
    return web.Response(body=body, status=status, reason=reason, headers=headers, content_type=JSON_TYPE)


def problem(status: int, title: str, detail: str, **extra: Any) -> web.Response:
    """Replicate's problem envelope."""
    return json_response(_dumps({"title": title, "detail": detail, "status": status, **extra}), status)


def openai_error(status: int, message: str, type_: str, code: str | None) -> web.Response:
    """The OpenAI-style envelope CometAPI's gateway uses for its own errors."""
    return json_response(_dumps({"error": {"message": message, "type": type_, "code": code}}), status)


def html_error(status: int, message: str | None = None) -> web.Response:
    """A page like the one a CDN in front of the gateway answers."""
    title = f"{status} {_reason(status)}"
    text = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n"
        + (f"<p>{message}</p>\r\n" if message else "")
        + "<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
    )
    return web.Response(text=text, status=status, reason=_reason(status), content_type="text/html")


def invalid(fields: list[InvalidField]) -> web.Response:
    detail = "".join(f"- {f.field}: {f.description}\n" for f in fields)
    return problem(422, "Input validation failed", detail, invalid_fields=[f.to_dict() for f in fields])


def parse_prefer_wait(header: str | None) -> float | None:
    """``Prefer: wait=N`` -> N clamped to 1..60; bare ``wait`` means the maximum."""
    if not header:
        return None
    for token in header.split(","):
        name, sep, value = token.strip().partition("=")
        if name.strip().lower() != "wait":
            continue
        if not sep:
            return 60.0
        try:
            seconds = float(value.strip())
        except ValueError:
            return None
        return min(60.0, max(1.0, seconds))
    return None


def _retry_after_text(seconds: float) -> str:
    return str(int(seconds)) if seconds == int(seconds) else f"{seconds:g}"


def _same_secret(given: str, expected: str) -> bool:
    # Bytes, because compare_digest refuses non-ASCII str; surrogatepass encodes any str.
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def _bearer_denied(request: web.Request, expected: str, name: str, code: str) -> web.Response | None:
    """None if the request carries ``Bearer <expected>``, else the 401 naming ``name``."""
    header = request.headers.get("Authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and _same_secret(token.strip(), expected):
            return None
        message = f"Invalid token: the {name} is not valid."
    else:
        message = f"Missing Authorization header: use 'Authorization: Bearer <{name}>'."
    return openai_error(401, message, "comet_api_error", code)


def body_problem(exc: BodyError) -> web.Response:
    return problem(exc.status, exc.title, exc.detail)


def control_error(status: int, message: str) -> web.Response:
    """The control routes' own error shape: ``{"error": <reason>}``."""
    return json_response(_dumps({"error": message}), status)


class Emulator:
    """Route handlers bound to one ``Store``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.config = store.config
        self.bearer = f"Bearer {store.config.api_key}"
        self._base_cache: dict[str, str] = {}
        # Set by serve(), which owns the listening socket; None when the app runs elsewhere.
        self.go_offline: Callable[[float], Awaitable[None]] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.models_body = _dumps(
            {
                "object": "list",
                "data": [
                    {"id": m.model_id, "object": "model", "owned_by": m.owner, "created": 0} for m in MODELS.values()
                ],
            }
        )

    # -- shared pieces -------------------------------------------------------------------

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") == self.bearer:
            return None
        return _bearer_denied(request, self.config.api_key, "API key", "invalid_api_key")

    def guarded(self, handler: Handler) -> Handler:
        """``handler`` behind the control routes' auth: the control token if set, else the API key."""
        token = self.config.control_token
        expected, name, code = (
            (token, "control token", "invalid_control_token")
            if token is not None
            else (self.config.api_key, "API key", "invalid_api_key")
        )

        async def control_route(request: web.Request) -> web.StreamResponse:
            denied = _bearer_denied(request, expected, name, code)
            return denied if denied is not None else await handler(request)

        return control_route

    def _base(self, request: web.Request) -> str:
        """``scheme://host:port`` the request came to, so file URLs work through any address."""
        host = request.host
        base = self._base_cache.get(host)
        if base is None:
            base = f"{request.scheme}://{host}"
            if len(self._base_cache) < 64:
                self._base_cache[host] = base
        return base

    async def _fault(
        self, request: web.Request, rule: FaultRule, prediction_body: bytes | None = None
    ) -> web.StreamResponse | None:
        """Serve ``rule``; None means "carry on normally" (after a ``slow`` delay)."""
        rule.consume()
        self.store.stats.faults_served += 1
        kind = rule.kind
        if kind == "slow":
            await asyncio.sleep(rule.delay)
            return None
        if kind == "throttle":
            wait = rule.retry_after
            headers = {"Retry-After": _retry_after_text(wait)} if rule.header else None
            detail = (
                rule.message or f"Request was throttled. Expected available in {_retry_after_text(wait)} second(s)."
            )
            payload: dict[str, Any] = {"title": "Request was throttled.", "detail": detail, "status": 429}
            if rule.body:
                payload["retry_after"] = wait
            return json_response(_dumps(payload), 429, headers)
        if kind == "server_error":
            if rule.html:
                return html_error(rule.status, rule.message)
            return problem(rule.status, _reason(rule.status), rule.message or "Upstream error (emulated).")
        if kind == "error":
            message = rule.message or _reason(rule.status)
            if rule.envelope == "html":
                return html_error(rule.status, message)
            if rule.envelope == "openai":
                return openai_error(rule.status, message, rule.type or "comet_api_error", rule.code)
            return problem(rule.status, _reason(rule.status), message)
        if kind == "malformed_json":
            body = (
                prediction_body or b'{"id":"' + self.store.new_id().encode() + b'","status":"processing","output":null}'
            )
            return json_response(body[: max(1, len(body) // 2)])
        # reset: the connection drops, by default after headers promising a body and a few
        # bytes of it (the client sees an incomplete read), else before any byte.
        resp = web.StreamResponse(status=200, headers={"Content-Type": JSON_TYPE, "Content-Length": "4096"})
        if rule.partial:
            await resp.prepare(request)
            await resp.write(b'{"id":"')
        if request.transport is not None:
            request.transport.abort()
        # aiohttp's prepare/write_eof now fail with ConnectionError: to aiohttp, a client gone.
        return resp

    async def _render(self, pred: Prediction, index: int) -> bytes:
        width, height = images.dimensions(pred.aspect_ratio, self.config.image_size)
        loop = asyncio.get_running_loop()
        # Off the event loop: a large PNG takes tens of milliseconds to encode.
        return await loop.run_in_executor(
            None, images.render, pred.prompt, pred.seed, index, pred.output_format, pred.quality, width, height
        )

    async def _ensure_data_uris(self, pred: Prediction) -> None:
        uris = []
        for i in range(pred.n):
            uris.append(images.data_uri(pred.output_format, await self._render(pred, i)))
        pred.data_uris = uris

    async def _prediction_response(self, request: web.Request, pred: Prediction, status: int = 200) -> web.Response:
        now = time.monotonic()
        if (pred.data_uri or pred.partial_output) and pred.needs_data_uris(now, self.config.output_ttl):
            try:
                await self._ensure_data_uris(pred)
            except ImportError:
                return _pillow_missing()
        return json_response(pred.to_json(self._base(request), now, self.config.output_ttl), status)

    # -- API routes ----------------------------------------------------------------------

    async def _admit(self, request: web.Request, route: str, *, authenticate: bool = True) -> web.StreamResponse | None:
        """Count the request, check the key, apply a matching fault: the answer to send instead, if any."""
        store = self.store
        store.stats.requests += 1
        if authenticate and request.headers.get("Authorization") != self.bearer:
            denied = self._unauthorized(request)
            if denied is not None:
                return denied
        if store.faults.rules:
            rule = store.faults.match(route)
            if rule is not None:
                return await self._fault(request, rule)
        return None

    async def create_from_path(self, request: web.Request) -> web.StreamResponse:
        self.store.stats.requests += 1
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        model_id = f"{request.match_info['owner']}/{split_model_ref(request.match_info['name'])[0]}"
        return await self._create(request, model_id, from_body=False)

    async def create_from_body(self, request: web.Request) -> web.StreamResponse:
        self.store.stats.requests += 1
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        return await self._create(request, None, from_body=True)

    async def _create(self, request: web.Request, model_id: str | None, *, from_body: bool) -> web.StreamResponse:
        store = self.store
        # The whole request is in before any fault: a client that gives up during a `slow`
        # fault still gets its prediction created, as with a real slow gateway.
        unreadable: BodyError | None = None  # answered after the faults, as an invalid body was
        try:
            raw, body = await read_json(request, self.config.max_request_bytes)
        except BodyError as exc:
            if exc.status == 413:
                return body_problem(exc)
            raw, body, unreadable = b"", None, exc
        limiter = store.create_limiter
        if limiter.per_minute is not None:
            # Every create that passed auth takes a token, as on Replicate; a 429 is no create.
            wait = limiter.take(request.headers.get("Authorization", ""), time.monotonic())
            if wait is not None:
                return _create_throttled(wait)
        deferred: FaultRule | None = None
        if store.faults.rules:
            rule = store.faults.match("create")
            if rule is not None:
                if rule.after_create:
                    deferred = rule  # consumed only if a prediction really gets created
                else:
                    faulted = await self._fault(request, rule)
                    if faulted is not None:
                        return faulted

        if unreadable is not None:
            return body_problem(unreadable)
        if not isinstance(body, dict):
            return invalid([InvalidField("invalid_json", "body", "the request body must be a JSON object")])
        if from_body:
            ref = body.get("model") or body.get("version")
            if not isinstance(ref, str) or "/" not in ref:
                return invalid(
                    [InvalidField("required", "model", "model is required: 'owner/name' (or version 'owner/name:ver')")]
                )
            model_id = split_model_ref(ref)[0]
        assert model_id is not None
        model = MODELS.get(model_id)
        if model is None:
            return problem(404, "Not found", f"The requested model {model_id!r} could not be found.")
        raw_input = body.get("input")
        if not isinstance(raw_input, dict):
            return invalid([InvalidField("type", "input", "input is required and must be an object")])
        echo, control, errors = validate_input(model, raw_input)
        if errors:
            return invalid(errors)

        now = time.monotonic()
        if not store.retention.make_room(now, len(raw)):
            return _store_full(self.config.max_predictions, self.config.max_stored_bytes)
        pred = store.create(model, echo, control, now, time.time(), len(raw))
        if deferred is not None:
            body_so_far = None
            if deferred.kind == "malformed_json":
                body_so_far = pred.to_json(self._base(request), time.monotonic(), self.config.output_ttl)
            faulted = await self._fault(request, deferred, body_so_far)
            if faulted is not None:
                return faulted
        wait = parse_prefer_wait(request.headers.get("Prefer"))
        if wait is not None:
            await self._hold(pred, wait)
        return await self._prediction_response(request, pred, 201)

    async def _hold(self, pred: Prediction, seconds: float) -> None:
        """Sleep until the prediction is terminal or ``seconds`` passed; a cancel wakes it early."""
        remaining = pred.seconds_to_terminal(time.monotonic())
        if remaining == 0.0:
            return
        # A couple of milliseconds past the deadline so the clock surely reads "terminal".
        timeout = seconds if remaining is None else min(seconds, remaining + 0.002)
        if pred.waiter is None:
            pred.waiter = asyncio.Event()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(pred.waiter.wait(), timeout)

    async def get_prediction(self, request: web.Request) -> web.StreamResponse:
        admitted = await self._admit(request, "get")
        if admitted is not None:
            return admitted
        store = self.store
        store.stats.polls += 1
        pred = store.predictions.get(request.match_info["id"])
        if pred is None:
            return _prediction_not_found()
        pred.polls += 1
        if pred.data_uri or pred.partial_output:
            return await self._prediction_response(request, pred)
        return json_response(pred.to_json(self._base(request), time.monotonic(), self.config.output_ttl))

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        admitted = await self._admit(request, "cancel")
        if admitted is not None:
            return admitted
        store = self.store
        store.stats.cancels += 1
        pred = store.predictions.get(request.match_info["id"])
        if pred is not None:
            pred.cancels += 1
        if not self.config.cancel_supported:
            return problem(404, "Not found", "The requested resource could not be found.")
        if pred is None:
            return _prediction_not_found()
        now = time.monotonic()
        if pred.status_at(now)[1] is None:
            store.cancel(pred, now)
        return await self._prediction_response(request, pred)

    async def models(self, request: web.Request) -> web.StreamResponse:
        admitted = await self._admit(request, "models")
        if admitted is not None:
            return admitted
        store = self.store
        store.stats.models += 1
        return json_response(self.models_body)

    async def files(self, request: web.Request) -> web.StreamResponse:
        """Output files; no auth, like the CDN the real URLs point at, but only with the file token."""
        admitted = await self._admit(request, "files", authenticate=False)
        if admitted is not None:
            return admitted
        store = self.store
        match = _FILE_RE.fullmatch(request.match_info["filename"])
        pred = store.predictions.get(request.match_info["id"])
        if match is None or pred is None or not _same_secret(request.match_info["token"], pred.file_token):
            return _file_not_found()
        index, ext = int(match[1]), match[2]
        now = time.monotonic()
        status, end = pred.status_at(now)
        if (
            status != "succeeded"
            or end is None
            or now - (pred.created + end) >= self.config.output_ttl
            or index >= pred.n
            or ext != pred.output_format
        ):
            return _file_not_found()
        try:
            data = await self._render(pred, index)
        except ImportError:
            return _pillow_missing()
        store.stats.file_downloads += 1
        return web.Response(
            body=data,
            content_type=images.content_type(pred.output_format),
            headers={"Cache-Control": "public, max-age=3600"},
        )

    # -- control routes (behind guarded(): they exist for tests on loopback) ----------------

    async def control_stats(self, request: web.Request) -> web.StreamResponse:
        detail = request.query.get("detail", "1").lower() not in ("0", "false", "no")
        return json_response(_dumps(self.store.stats_dict(time.monotonic(), detail)))

    async def control_add_fault(self, request: web.Request) -> web.StreamResponse:
        try:
            _, raw = await read_json(request, self.config.max_request_bytes)
            rule = self.store.faults.add(raw)
        except BodyError as exc:
            return control_error(exc.status, exc.detail)
        except FaultRuleError as exc:
            return control_error(400, str(exc))
        return json_response(_dumps({"index": len(self.store.faults.rules) - 1, "rule": rule.to_dict()}), 201)

    async def control_list_faults(self, request: web.Request) -> web.StreamResponse:
        return json_response(_dumps({"faults": [r.to_dict() for r in self.store.faults.rules]}))

    async def control_clear_faults(self, request: web.Request) -> web.StreamResponse:
        return json_response(_dumps({"cleared": self.store.faults.clear()}))

    async def control_outage(self, request: web.Request) -> web.StreamResponse:
        """Go away for ``seconds`` (connections refused, open ones dropped), then come back.

        Predictions keep their clocks meanwhile: what the gateway knew, it still knows after.
        """
        try:
            _, body = await read_json(request, self.config.max_request_bytes)
        except BodyError as exc:
            return control_error(exc.status, exc.detail)
        seconds = body.get("seconds") if isinstance(body, dict) else None
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            return control_error(400, 'send {"seconds": <number>}')
        if not 0 < seconds <= MAX_OUTAGE_SECONDS:
            return control_error(400, f"seconds must be in (0, {MAX_OUTAGE_SECONDS:g}]")
        if self.go_offline is None:
            return control_error(501, "outages need the emulator's own server (serve())")
        go_offline = self.go_offline
        # After this answer has left: the control client must not be the first connection dropped.
        task = asyncio.create_task(_after(0.05, go_offline(float(seconds))))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return json_response(_dumps({"offline_for": seconds}), 202, {"Connection": "close"})

    async def control_get_create_limit(self, request: web.Request) -> web.StreamResponse:
        limiter = self.store.create_limiter
        return json_response(_dumps({**limiter.to_dict(), "throttled": limiter.throttled}))

    async def control_set_create_limit(self, request: web.Request) -> web.StreamResponse:
        """``{"per_minute": N or null, "burst": B}``: the limit from now on, every bucket full."""
        try:
            _, body = await read_json(request, self.config.max_request_bytes)
        except BodyError as exc:
            return control_error(exc.status, exc.detail)
        if not isinstance(body, dict) or "per_minute" not in body or set(body) - {"per_minute", "burst"}:
            return control_error(400, 'send {"per_minute": <creates a minute, or null>, "burst": <optional>}')
        try:
            self.store.create_limiter.configure(body["per_minute"], body.get("burst"))
        except ValueError as exc:
            return control_error(400, str(exc))
        return json_response(_dumps(self.store.create_limiter.to_dict()))

    async def control_reset(self, request: web.Request) -> web.StreamResponse:
        self.store.reset()
        return json_response(b'{"reset":true}')

    async def control_config(self, request: web.Request) -> web.StreamResponse:
        c = self.config
        return json_response(
            _dumps(
                {
                    "duration": c.duration,
                    "starting_for": c.effective_starting_for,
                    "output_ttl": c.output_ttl,
                    "image_size": c.image_size,
                    "cancel_supported": c.cancel_supported,
                    "forget_after": c.forget_after,
                    "max_predictions": c.max_predictions,
                    "max_stored_bytes": c.max_stored_bytes,
                    "max_request_bytes": c.max_request_bytes,
                    "control_token": c.control_token is not None,
                    "create_limit": self.store.create_limiter.to_dict(),
                    "models": list(MODELS),
                }
            )
        )


EMULATOR_KEY = web.AppKey("cometapi_emulator_handlers", Emulator)


async def _after(delay: float, action: Awaitable[None]) -> None:
    await asyncio.sleep(delay)
    await action


def _create_throttled(seconds: float) -> web.Response:
    """Replicate's answer to a create over the limit: 429, ``Retry-After`` and the problem body."""
    after = retry_after_header(seconds)
    detail = f"Request was throttled. Expected available in {after} second{'' if after == '1' else 's'}."
    body = {"title": "Request was throttled.", "detail": detail, "status": 429}
    return json_response(_dumps(body), 429, {"Retry-After": after})


def _prediction_not_found() -> web.Response:
    return problem(404, "Not found", "The requested prediction could not be found.")


def _store_full(max_predictions: int, max_stored_bytes: int) -> web.Response:
    detail = (
        f"The emulator keeps at most {max_predictions} predictions and {max_stored_bytes} bytes of their "
        "create bodies, and none of those kept has finished yet: retry once one has, or start it with a "
        "larger --max-predictions / --max-stored-bytes."
    )
    return json_response(
        _dumps({"title": "Too many predictions", "detail": detail, "status": 429}), 429, {"Retry-After": "1"}
    )


def _file_not_found() -> web.Response:
    return web.Response(status=404, text="404: file not found or expired")


def _pillow_missing() -> web.Response:
    return problem(
        500,
        "Internal Server Error",
        "Rendering images needs Pillow: pip install 'airflow-provider-cometapi[emulator]'",
    )


def create_app(config: EmulatorConfig | None = None) -> web.Application:
    """A ready-to-run application; its state lives in ``app[STORE_KEY]``."""
    config = config or EmulatorConfig()
    app = web.Application(client_max_size=config.max_request_bytes)
    store = Store(config)
    app[STORE_KEY] = store
    emu = Emulator(store)
    app[EMULATOR_KEY] = emu
    app.cleanup_ctx.append(_sweeping)
    add = app.router
    guarded = emu.guarded
    # The poll route first: resources sharing a path prefix are tried in registration order.
    add.add_get("/replicate/v1/predictions/{id}", emu.get_prediction, allow_head=False)
    add.add_post("/replicate/v1/models/{owner}/{name}/predictions", emu.create_from_path)
    add.add_post("/replicate/v1/predictions", emu.create_from_body)
    add.add_post("/replicate/v1/predictions/{id}/cancel", emu.cancel)
    add.add_get("/v1/models", emu.models, allow_head=False)
    add.add_get("/files/{id}/{token}/{filename}", emu.files)
    add.add_get("/_emulator/stats", guarded(emu.control_stats), allow_head=False)
    add.add_get("/_emulator/config", guarded(emu.control_config), allow_head=False)
    add.add_get("/_emulator/faults", guarded(emu.control_list_faults), allow_head=False)
    add.add_post("/_emulator/faults", guarded(emu.control_add_fault))
    add.add_delete("/_emulator/faults", guarded(emu.control_clear_faults))
    add.add_post("/_emulator/reset", guarded(emu.control_reset))
    add.add_post("/_emulator/outage", guarded(emu.control_outage))
    add.add_get("/_emulator/create-limit", guarded(emu.control_get_create_limit), allow_head=False)
    add.add_post("/_emulator/create-limit", guarded(emu.control_set_create_limit))
    return app


async def _sweeping(app: web.Application) -> AsyncIterator[None]:
    """While the app runs, forget finished predictions once their time is up."""
    retention = app[STORE_KEY].retention

    async def sweep_forever() -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            retention.sweep(time.monotonic())

    task = asyncio.create_task(sweep_forever())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class _Listener:
    """The listening socket, which an outage closes and reopens on the same port."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self.runner = runner
        self.host = host
        self.port = port
        self.site: web.SockSite | None = None

    async def start(self) -> tuple[str, int]:
        sock = _bind(self.host, self.port)
        self.site = web.SockSite(self.runner, sock, shutdown_timeout=1.0, backlog=1024)
        await self.site.start()
        host, self.port = sock.getsockname()[:2]
        return host, self.port

    async def outage(self, seconds: float) -> None:
        if self.site is not None:
            await self.site.stop()
            self.site = None
        server = self.runner.server
        for handler in server.connections if server is not None else ():
            if handler.transport is not None:
                handler.transport.abort()
        await asyncio.sleep(seconds)
        await self.start()


async def serve(
    config: EmulatorConfig,
    *,
    announce: Callable[[str], None] | None = None,
    exit_with_parent: bool = False,
    parent_pid: int | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or, optionally, until the parent process is gone).

    :param exit_with_parent: stop once ``parent_pid`` (default: this process's parent when
        ``serve`` starts) is no longer the parent, i.e. once it has died.
    """
    # The parent is taken before the ready line goes out: a harness may be killed as soon as it
    # has read that line, and a getppid() after it would then see init (or a subreaper) and the
    # emulator would watch the wrong process forever.
    parent = parent_pid if parent_pid is not None else os.getppid()
    app = create_app(config)
    runner_kwargs: dict[str, Any] = {"access_log": None}
    if config.access_log:
        import logging

        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
        runner_kwargs = {}
    # Held `Prefer: wait` requests must not delay a clean shutdown for long.
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0, **runner_kwargs)
    await runner.setup()
    listener = _Listener(runner, config.host, config.port)
    host, port = await listener.start()
    app[EMULATOR_KEY].go_offline = listener.outage
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}"
    if announce is not None:
        announce(url)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watchdog: asyncio.Task[None] | None = None
    if exit_with_parent:
        watchdog = asyncio.create_task(_watch_parent(parent, stop))
    try:
        await stop.wait()
    finally:
        if watchdog is not None:
            watchdog.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    # Reparenting (to init or a subreaper) changes getppid(): the test run that started us is gone
    # (already before the first look, if it died while the emulator was starting).
    while os.getppid() == parent:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
            return
    stop.set()
