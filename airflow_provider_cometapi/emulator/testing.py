"""Run the emulator as a subprocess from tests, demos and benchmarks (standard library only).

Typical use::

    with EmulatorProcess(api_key="test-key", duration=0.5) as emu:
        os.environ["AIRFLOW_CONN_COMETAPI_DEFAULT"] = emu.connection_json()
        ...
        assert emu.stats()["creates"] == 1
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types import TracebackType

READY_PREFIX = "cometapi-emulator listening on "


class EmulatorError(RuntimeError):
    """The emulator did not start, or a control request failed."""


class EmulatorProcess:
    """One ``cometapi-emulator`` subprocess on a free loopback port.

    ``start()`` returns once the server is listening; ``stop()`` ends it by pid (SIGTERM, then
    SIGKILL after ``stop_timeout``) and is safe to call twice. The child also exits by itself if
    this process dies, so an interrupted test run leaves nothing behind. Used as a context
    manager, it starts on entry and stops on exit.

    :param api_key: the only bearer key the emulator accepts; the control methods send it too
        unless ``control_token`` is set.
    :param duration: seconds from create to the terminal status.
    :param extra_args: more ``cometapi-emulator`` flags, e.g. ``["--no-cancel"]`` or ``--fault`` rules.
    :param env: the child's environment, merged over this process's.
    :param starting_for: seconds in ``starting`` before ``processing`` (the emulator's default if None).
    :param host: the loopback address to bind; the port is always a free one.
    :param startup_timeout: seconds to wait for the ready line before failing with ``EmulatorError``.
    :param stop_timeout: seconds between SIGTERM and SIGKILL in ``stop()``.
    :param control_token: passed as ``--control-token``: the control routes then take only this
        bearer, and the control methods send it.
    :param create_limit: passed as ``--create-limit``: creates a minute the key may make before
        429s (None: no limit); ``set_create_limit`` changes it while running.
    """

    def __init__(
        self,
        api_key: str = "test-key",
        duration: float = 0.5,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        *,
        starting_for: float | None = None,
        host: str = "127.0.0.1",
        startup_timeout: float = 30.0,
        stop_timeout: float = 5.0,
        control_token: str | None = None,
        create_limit: float | None = None,
    ) -> None:
        self.api_key = api_key
        self.control_token = control_token
        self.create_limit = create_limit
        self.duration = duration
        self.starting_for = starting_for
        self.extra_args = tuple(extra_args)
        self.env = dict(env) if env is not None else None
        self.host = host
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.port: int | None = None
        self.base_url: str = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The child's pid, once started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the child is alive."""
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The command line the child runs."""
        cmd = [
            sys.executable,
            "-m",
            "airflow_provider_cometapi.emulator",
            "--host",
            self.host,
            "--port",
            "0",
            "--api-key",
            self.api_key,
            "--duration",
            str(self.duration),
            # This process's pid: the child exits even if this process dies before it is up.
            "--exit-with-parent",
            str(os.getpid()),
        ]
        if self.starting_for is not None:
            cmd += ["--starting-for", str(self.starting_for)]
        if self.control_token is not None:
            cmd += ["--control-token", self.control_token]
        if self.create_limit is not None:
            cmd += ["--create-limit", str(self.create_limit)]
        return cmd + list(self.extra_args)

    def start(self) -> EmulatorProcess:
        """Start the child and return once it listens; ``port`` and ``base_url`` are set then.

        :raises EmulatorError: it exited or printed no ready line in time (with its stderr).
        """
        if self._proc is not None:
            raise EmulatorError("this EmulatorProcess was already started")
        env = {**os.environ, **self.env} if self.env is not None else None
        # stderr goes to a file, not a pipe: nobody reads it while the server runs, and a
        # full pipe would block the child.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the process)
        self._proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            bufsize=0,
        )
        try:
            line = self._read_ready_line()
        except BaseException:
            self.stop()
            raise
        url = line[len(READY_PREFIX) :].strip()
        self.base_url = url
        self.port = int(url.rsplit(":", 1)[1])
        return self

    def _read_ready_line(self) -> str:
        assert self._proc is not None
        assert self._proc.stdout is not None
        out = self._proc.stdout
        deadline = time.monotonic() + self.startup_timeout
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(out, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise EmulatorError(
                        f"emulator did not report ready within {self.startup_timeout}s{self._stderr_tail()}"
                    )
                if not sel.select(timeout=left):
                    continue
                chunk = os.read(out.fileno(), 4096)
                if not chunk:
                    self._proc.wait(timeout=self.stop_timeout)
                    raise EmulatorError(
                        f"emulator exited with code {self._proc.returncode} before it was ready{self._stderr_tail()}"
                    )
                buf += chunk
        line = buf.split(b"\n", 1)[0].decode("utf-8", "replace")
        if not line.startswith(READY_PREFIX):
            raise EmulatorError(f"unexpected first line from the emulator: {line!r}{self._stderr_tail()}")
        return line

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.seek(0)
            text = self._stderr.read()[-4000:].decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return f"; stderr:\n{text}" if text else "; stderr was empty"

    def stderr_text(self) -> str:
        """Everything the emulator wrote to stderr so far (access log, warnings)."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def stop(self) -> int | None:
        """End the process by pid; returns its exit code (None if it was never started)."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if self._stderr is not None and not self._stderr.closed:
            # Kept readable for post-mortems until the object goes away.
            self._stderr.flush()
        return proc.returncode

    def close(self) -> None:
        """stop() and release the captured stderr."""
        self.stop()
        if self._stderr is not None:
            self._stderr.close()

    def __enter__(self) -> EmulatorProcess:
        if self._proc is None:
            try:
                self.start()
            except BaseException:
                self.close()  # __exit__ will not run: release the stderr file here
                raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- control routes --------------------------------------------------------------------

    def control_headers(self) -> dict[str, str]:
        """The ``Authorization`` header the ``/_emulator/`` routes take, for direct calls to them."""
        token = self.control_token if self.control_token is not None else self.api_key
        return {"Authorization": f"Bearer {token}"}

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        if not self.base_url:
            raise EmulatorError("the emulator is not started")
        data = json.dumps(body).encode() if body is not None else None
        headers = self.control_headers()
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise EmulatorError(f"{method} {path} answered {exc.code}: {detail}") from exc

    def stats(self, detail: bool = True) -> dict[str, Any]:
        """``GET /_emulator/stats``: creates, polls, cancels...; ``detail=False`` leaves out each prediction."""
        result: dict[str, Any] = self._control("GET", "/_emulator/stats" + ("" if detail else "?detail=0"))
        return result

    def add_fault(self, **rule: Any) -> None:
        """Install one fault rule, e.g. ``add_fault(kind="throttle", route="create", count=2)``."""
        self._control("POST", "/_emulator/faults", rule)

    def faults(self) -> list[dict[str, Any]]:
        """The installed fault rules, each with how often it was ``served``."""
        result: list[dict[str, Any]] = self._control("GET", "/_emulator/faults")["faults"]
        return result

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        self._control("DELETE", "/_emulator/faults")

    def outage(self, seconds: float) -> None:
        """Make the gateway go away (connections refused, open ones dropped) for ``seconds``."""
        self._control("POST", "/_emulator/outage", {"seconds": seconds})

    def wait_until_reachable(self, timeout: float = 60.0) -> None:
        """Return once the emulator answers again (after an outage); raise if it does not in time."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.stats(detail=False)
                return
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise EmulatorError(f"the emulator did not answer within {timeout:g}s: {exc}") from exc
                time.sleep(0.2)

    def set_create_limit(self, per_minute: float | None, burst: int | None = None) -> dict[str, Any]:
        """Throttle creates to ``per_minute`` (None: no limit) from now on, every bucket full; until ``reset()``."""
        body: dict[str, Any] = {"per_minute": per_minute}
        if burst is not None:
            body["burst"] = burst
        result: dict[str, Any] = self._control("POST", "/_emulator/create-limit", body)
        return result

    def create_limit_state(self) -> dict[str, Any]:
        """``GET /_emulator/create-limit``: ``per_minute``, ``burst`` and how many creates were ``throttled``."""
        result: dict[str, Any] = self._control("GET", "/_emulator/create-limit")
        return result

    def reset(self) -> None:
        """Forget predictions, statistics and fault rules; the create limit goes back to the one given at start."""
        self._control("POST", "/_emulator/reset")

    # -- Airflow connection ----------------------------------------------------------------

    def connection_dict(self) -> dict[str, str]:
        """The Airflow connection to this emulator as a dict (``conn_type``, ``password``, ``host``)."""
        return {"conn_type": "cometapi", "password": self.api_key, "host": self.base_url}

    def connection_json(self) -> str:
        """The value for ``AIRFLOW_CONN_COMETAPI_DEFAULT`` (JSON form)."""
        return json.dumps(self.connection_dict())

    def connection_uri(self) -> str:
        """The same connection in Airflow's URI form.

        The host (with its scheme and port) is percent-encoded as one piece, so Airflow parses it
        back to exactly ``base_url`` in ``host``, as the JSON form has it.
        """
        password = urllib.parse.quote(self.api_key, safe="")
        host = urllib.parse.quote(self.base_url, safe="")
        return f"cometapi://:{password}@{host}"

    def airflow_env(self, conn_id: str = "cometapi_default") -> dict[str, str]:
        """``{"AIRFLOW_CONN_<ID>": <json>}`` to merge into a process environment."""
        return {f"AIRFLOW_CONN_{conn_id.upper()}": self.connection_json()}
