"""
``make airflow``: the emulator and a local Airflow (api-server, scheduler, dag-processor,
triggerer; LocalExecutor) with the example DAGs, until Ctrl-C.

The connection ``cometapi_default`` points at the emulator, or at the real gateway when
``COMETAPI_API_KEY`` is set (``COMETAPI_BASE_URL`` overrides its base URL), as in ``make demo``.
Its state lives in ``.airflow-local/`` (``AIRFLOW_LOCAL_HOME`` moves it). The metadata
database is SQLite in ``.airflow-local/airflow.db`` (every laptop has it, and it
keeps the runs from one start to the next); ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` names another
one, e.g. a PostgreSQL database (created when missing). The UI listens on 127.0.0.1 at ``AIRFLOW_PORT`` (8080).
Ctrl-C (SIGINT) or SIGTERM stops every process this script started, each by its process group.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from airflow_provider_cometapi.emulator import EmulatorProcess  # noqa: E402
from tests.e2e.harness import ADMIN_USER, AirflowStack  # noqa: E402

HOME = Path(os.environ.get("AIRFLOW_LOCAL_HOME", REPO / ".airflow-local")).resolve()
PASSWORD = "admin"  # the api-server listens on loopback only


class Stop(Exception):
    """SIGINT or SIGTERM arrived."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def ensure_postgres_database(url: str) -> None:
    """A PostgreSQL database named in the URL is created when it does not exist yet."""
    from sqlalchemy.engine import make_url

    target = make_url(url)
    if not target.drivername.startswith("postgresql") or not target.database:
        return
    command = ["psql", "-h", target.host or "127.0.0.1", "-p", str(target.port or 5432)]
    command += ["-U", target.username or "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-tAc"]
    env = {**os.environ, **({"PGPASSWORD": target.password} if target.password else {})}
    name = target.database.replace('"', '""')
    exists = subprocess.run(
        [*command, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not exists:
        subprocess.run([*command, f'CREATE DATABASE "{name}"'], env=env, check=True, capture_output=True, text=True)
        print(f"Created the PostgreSQL database {target.database}.", flush=True)


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def main() -> int:
    port = int(os.environ.get("AIRFLOW_PORT", "8080"))
    if port_in_use(port):
        print(f"Port {port} is in use; choose another: make airflow AIRFLOW_PORT={port + 1}", file=sys.stderr)
        return 2
    HOME.mkdir(exist_ok=True)
    (HOME / ".gitignore").write_text("*\n")
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    env = {"AIRFLOW_VAR_COMETAPI_STORAGE_ROOT": (HOME / "images").as_uri()}
    database = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or f"sqlite:///{HOME / 'airflow.db'}"
    emulator: EmulatorProcess | None = None
    stack: AirflowStack | None = None
    try:
        if os.environ.get("COMETAPI_API_KEY"):
            base_url = os.environ.get("COMETAPI_BASE_URL", "")
            connection = {"conn_type": "cometapi", "password": os.environ["COMETAPI_API_KEY"], "host": base_url}
            env["AIRFLOW_CONN_COMETAPI_DEFAULT"] = json.dumps(connection)
            target = f"the real CometAPI gateway {base_url or 'https://api.cometapi.com'} (COMETAPI_API_KEY is set)"
        else:
            emulator = EmulatorProcess(api_key="local-key-not-secret", duration=5.0).start()
            env.update(emulator.airflow_env())
            target = (
                f"cometapi-emulator on {emulator.base_url} (pid {emulator.pid}); set COMETAPI_API_KEY for the real API"
            )
        ensure_postgres_database(database)
        stack = AirflowStack(
            HOME, [REPO / "dags_examples"], env=env, port=port, sql_alchemy_conn=database, password=PASSWORD
        )
        print(f"Starting Airflow in {_shown(HOME)}/ (database {database.split('://')[0]}) ...", flush=True)
        stack.start()
        pids = ", ".join(f"{name} {process.pid}" for name, process in stack.processes.items())
        print(
            f"\nAirflow is up: {stack.base_url}   login: {ADMIN_USER} / {PASSWORD}\n"
            f"  connection cometapi_default -> {target}\n"
            f"  DAGs from dags_examples/ (they start paused: unpause or trigger one in the UI)\n"
            f"  images in {_shown(HOME)}/images/, each component's log in {_shown(HOME)}/*.log\n"
            f"  processes (pid): {pids}\n"
            "Press Ctrl-C to stop everything.",
            flush=True,
        )
        while True:
            for name, process in stack.processes.items():
                if process.poll() is not None:
                    print(f"{name} exited with {process.returncode}:\n{stack.output_of(name)[-3000:]}", file=sys.stderr)
                    return 1
            time.sleep(1)
    except Stop as signal_name:
        print(f"\n{signal_name} received: stopping ...", flush=True)
        return 0
    finally:
        # A second Ctrl-C must not cut the cleanup short; each stop is bounded (SIGKILL after 30 s).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if stack is not None:
            stack.stop()
        if emulator is not None:
            emulator.close()
        print("Stopped everything make airflow started.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
