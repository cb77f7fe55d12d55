"""The CLI, the EmulatorProcess harness and create_app used in-process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp.test_utils import TestClient, TestServer

from airflow_provider_cometapi.emulator import EmulatorConfig, EmulatorProcess, create_app
from airflow_provider_cometapi.emulator.testing import EmulatorError

from .helpers import Api

READY = re.compile(r"^cometapi-emulator listening on http://127\.0\.0\.1:(\d+)\n$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_one_ready_line_and_exits_cleanly(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_cometapi.emulator", "--port", "0", "--api-key", "k"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        match = READY.match(line)
        assert match, line
        port = int(match[1])
        resp = requests.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": "Bearer k"}, timeout=10)
        assert resp.status_code == 200
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == b""  # exactly one line in total
    assert b"Traceback" not in err


def test_emulator_process_lifecycle() -> None:
    emu = EmulatorProcess(api_key="life-key", duration=0.2)
    assert emu.pid is None
    assert emu.stop() is None  # stopping an unstarted harness is harmless
    with emu:
        pid = emu.pid
        assert pid is not None
        assert _alive(pid)
        assert emu.running
        assert emu.port is not None
        assert emu.base_url == f"http://127.0.0.1:{emu.port}"
        assert emu.api_key == "life-key"
        config = requests.get(emu.base_url + "/_emulator/config", headers=emu.control_headers(), timeout=10).json()
        assert config["duration"] == 0.2
        assert config["starting_for"] == 0.2  # default 0.3, capped at the duration
        assert emu.stop() == 0
        assert emu.stop() == 0  # idempotent
    assert not _alive(pid)
    assert not emu.running


def test_connection_helpers(emulator: EmulatorProcess) -> None:
    expected = {"conn_type": "cometapi", "password": "test-key", "host": emulator.base_url}
    assert json.loads(emulator.connection_json()) == expected
    assert emulator.airflow_env() == {"AIRFLOW_CONN_COMETAPI_DEFAULT": emulator.connection_json()}

    from airflow.models.connection import Connection

    conn = Connection(conn_id="cometapi_default", uri=emulator.connection_uri())
    assert (conn.conn_type, conn.host, conn.password) == ("cometapi", emulator.base_url, "test-key")


def test_api_key_comes_from_the_environment() -> None:
    class NoKeyArg(EmulatorProcess):
        def command(self) -> list[str]:
            cmd = super().command()
            i = cmd.index("--api-key")
            return cmd[:i] + cmd[i + 2 :]

    with NoKeyArg(env={"COMETAPI_EMULATOR_API_KEY": "from-env"}) as emu:
        ok = requests.get(emu.base_url + "/v1/models", headers={"Authorization": "Bearer from-env"}, timeout=10)
        default = requests.get(
            emu.base_url + "/v1/models", headers={"Authorization": "Bearer emulator-key"}, timeout=10
        )
    assert ok.status_code == 200
    assert default.status_code == 401


def test_start_failure_reports_stderr() -> None:
    emu = EmulatorProcess(extra_args=["--image-size", "5"])
    with pytest.raises(EmulatorError, match="image_size") as info:
        emu.start()
    assert "exited with code 2" in str(info.value)
    assert not emu.running
    emu.close()


def test_emulator_exits_when_its_parent_dies(tmp_path: Path) -> None:
    # A parent that starts an emulator, reports its pid, then is killed without cleaning up.
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, time
            from airflow_provider_cometapi.emulator.testing import EmulatorProcess
            emu = EmulatorProcess().start()
            print(emu.pid, flush=True)
            time.sleep(60)
            """
        )
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
    child_pid = None
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert _alive(child_pid)
        parent.kill()
        parent.wait()
        # It takes about 1 s (a 0.5 s watch, then the shutdown); bounded generously for a loaded machine.
        assert _wait_gone(child_pid, 20), "emulator outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child_pid is not None and _alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)
        if parent.stdout is not None:
            parent.stdout.close()


def test_emulator_exits_when_its_parent_died_before_it_was_up(tmp_path: Path) -> None:
    # A parent that starts an emulator and dies at once: the child is reparented before it first
    # looks at its parent, and must still notice (it is given the parent's pid).
    ready, errors = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, subprocess
            from airflow_provider_cometapi.emulator.testing import EmulatorProcess
            with open({str(ready)!r}, "wb") as out, open({str(errors)!r}, "wb") as err:
                child = subprocess.Popen(EmulatorProcess().command(), stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            print(child.pid, flush=True)
            os._exit(0)
            """
        )
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True)
    child_pid = int(out.stdout)
    try:
        assert _wait_gone(child_pid, 30), "emulator outlived a parent that died while it started"
    finally:
        if _alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)
    # It came up before it noticed, rather than failing to start.
    assert READY.match(ready.read_text()), (ready.read_text(), errors.read_text())


def test_console_script_help() -> None:
    script = Path(sys.executable).parent / "cometapi-emulator"
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30, check=True).stdout
    for flag in (
        "--host",
        "--port",
        "--api-key",
        "--duration",
        "--starting-for",
        "--output-ttl",
        "--image-size",
        "--fault",
        "--no-cancel",
        "--access-log",
    ):
        assert flag in out


def test_access_log_goes_to_stderr() -> None:
    with EmulatorProcess(extra_args=["--access-log"]) as emu:
        requests.get(emu.base_url + "/v1/models", timeout=10)
        deadline = time.monotonic() + 5
        while "/v1/models" not in emu.stderr_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert '"GET /v1/models HTTP/1.1" 401' in emu.stderr_text()


def test_package_imports_without_pillow() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["PIL"] = None  # any import of Pillow now fails
        import airflow_provider_cometapi.emulator as emulator
        from airflow_provider_cometapi.emulator import __main__, server, images, testing
        emulator.create_app(emulator.EmulatorConfig())
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


async def test_create_app_in_process_and_without_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    config = EmulatorConfig(api_key="inproc", duration=0.0)
    async with TestClient(TestServer(create_app(config))) as client:
        headers = {"Authorization": "Bearer inproc"}
        resp = await client.post(
            "/replicate/v1/models/black-forest-labs/flux-schnell/predictions",
            json={"input": {"prompt": "in-process, no pillow here"}},
            headers=headers,
        )
        assert resp.status == 201
        body = await resp.json()
        assert body["status"] == "succeeded"
        path = "/" + body["output"][0].split("/", 3)[3]
        monkeypatch.setitem(sys.modules, "PIL", None)
        resp = await client.get(path)
        assert resp.status == 500
        assert "Pillow" in (await resp.json())["detail"]


def test_config_validation() -> None:
    assert EmulatorConfig(duration=0.1, starting_for=0.3).effective_starting_for == 0.1
    bad: dict[str, Any]
    for bad in ({"duration": -1}, {"api_key": ""}, {"image_size": 8}, {"port": 70000}, {"output_ttl": -1}):
        with pytest.raises(ValueError, match="must"):
            EmulatorConfig(**bad)


def test_outage_refuses_connections_then_comes_back_with_its_state() -> None:
    with EmulatorProcess(duration=0.6) as emu:
        api = Api(emu)
        pid = api.create_ok()["id"]
        kept_alive = api.models()
        assert kept_alive.status_code == 200
        emu.outage(1.0)
        time.sleep(0.3)
        with pytest.raises(requests.ConnectionError):
            api.get(pid)  # the kept-alive connection was dropped and new ones are refused
        deadline = time.monotonic() + 5
        while True:
            try:
                done = api.get_ok(pid)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the emulator did not come back"
                time.sleep(0.1)
        assert done["status"] == "succeeded"  # the prediction's clock ran on meanwhile


@pytest.mark.parametrize("body", [{}, {"seconds": 0}, {"seconds": "x"}, {"seconds": 1000}])
def test_outage_rejects_bad_durations(emulator: EmulatorProcess, body: dict) -> None:
    response = requests.post(
        f"{emulator.base_url}/_emulator/outage", json=body, headers=emulator.control_headers(), timeout=5
    )
    assert response.status_code == 400
    assert "seconds" in response.json()["error"]
