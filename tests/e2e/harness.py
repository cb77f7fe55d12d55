"""
A real Airflow 3 deployment for tests: PostgreSQL metadata DB, api-server, scheduler,
dag-processor and triggerer as separate processes, driven through the REST API v2.

Each stack gets its own database (created and dropped here), its own AIRFLOW_HOME and free
ports; every process is started in its own session and stopped by pid (its group), also when
a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]
PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432"
ADMIN_USER, ADMIN_PASSWORD = "admin", "e2e-admin-password"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def psql(sql: str, database: str = "postgres", *options: str) -> str:
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", *options, "-qc", sql],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def psql_query(sql: str, database: str) -> list[str]:
    """The rows of a query, one ``|``-separated line each."""
    return psql(sql, database, "--no-align", "--tuples-only").splitlines()


def pg_dump(database: str) -> str:
    """The whole database as SQL text (data only)."""
    return subprocess.run(
        ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "--data-only", database],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


class AirflowStack:
    """
    :param home: a fresh folder for AIRFLOW_HOME, logs and process output.
    :param dag_folders: folders registered as DAG bundles.
    :param env: extra environment (connections, Airflow settings) for every process.
    :param components: the ``airflow`` commands to start, in order, e.g. ``"celery worker"``; a
        command may repeat (two triggerers).
    :param port: the api-server's port; a free one if None.
    :param sql_alchemy_conn: the metadata database; None creates a database of its own on the
        machine's PostgreSQL and drops it in ``stop()``. One given is kept (``make airflow``'s SQLite).
    :param password: the admin user's password.
    """

    def __init__(
        self,
        home: Path,
        dag_folders: Iterable[Path],
        env: Mapping[str, str] | None = None,
        components: Iterable[str] = ("api-server", "scheduler", "dag-processor", "triggerer"),
        *,
        port: int | None = None,
        sql_alchemy_conn: str | None = None,
        password: str = ADMIN_PASSWORD,
    ) -> None:
        self.home = home
        self.database = None if sql_alchemy_conn else f"cometapi_e2e_{uuid.uuid4().hex[:10]}"
        self.port = port or free_port()
        self.password = password
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.components = list(components)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._token: str | None = None
        passwords = home / "passwords.json"
        home.mkdir(parents=True, exist_ok=True)
        passwords.write_text(json.dumps({ADMIN_USER: password}))
        bundles = [
            {
                "name": f"bundle_{i}",
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": str(folder)},
            }
            for i, folder in enumerate(dag_folders)
        ]
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn or f"{PG_URL}/{self.database}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            **(env or {}),
        }

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> AirflowStack:
        if self.database:
            psql(f"CREATE DATABASE {self.database}")
        self.airflow("db", "migrate")
        for index, component in enumerate(self.components):
            self.start_component(component, name=f"{component.replace(' ', '-')}-{index}")
        self.wait_until_healthy()
        return self

    def start_component(self, component: str, name: str | None = None) -> subprocess.Popen[bytes]:
        name = name or component
        output = (self.home / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow", *component.split()],
            env=self.env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group, so stopping it stops its children too
        )
        self.processes[name] = process
        return process

    def stop_component(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        process = self.processes.pop(name)
        _stop_group(process, sig, timeout)

    def stop(self) -> None:
        # All are told at once, so the stop takes as long as the slowest, not their sum.
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for name in list(self.processes):
            self.stop_component(name)
        if self.database:
            with contextlib.suppress(subprocess.CalledProcessError):
                psql(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")

    def __enter__(self) -> AirflowStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def airflow(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "airflow", *args], env=self.env, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result.stdout

    def wait_until_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.output_of(name)[-3000:]}")
            try:
                if requests.get(f"{self.base_url}/api/v2/monitor/health", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(1)
        raise TimeoutError(f"the API server did not answer in {timeout}s")

    def output_of(self, name: str) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- REST API v2 ------------------------------------------------------------------------

    @property
    def token(self) -> str:
        if self._token is None:
            answer = requests.post(
                f"{self.base_url}/auth/token", json={"username": ADMIN_USER, "password": self.password}, timeout=30
            )
            answer.raise_for_status()
            self._token = str(answer.json()["access_token"])
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = requests.request(
            method,
            f"{self.base_url}/api/v2/{path.lstrip('/')}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
            **kwargs,
        )
        if not answer.ok:
            raise RuntimeError(f"{method} {path}: HTTP {answer.status_code}: {answer.text[:1000]}")
        return answer.json() if answer.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.api("GET", f"dags/{dag_id}")
                return
            except RuntimeError:
                time.sleep(2)
        raise TimeoutError(f"DAG {dag_id} was not parsed in {timeout}s")

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        """Unpause the DAG and start a manual run (for DAGs without a schedule)."""
        self.wait_for_dag(dag_id)
        self.api("PATCH", f"dags/{dag_id}", json={"is_paused": False})
        run = self.api("POST", f"dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": dict(conf or {})})
        return str(run["dag_run_id"])

    def unpause_and_get_scheduled_run(self, dag_id: str, timeout: float = 120) -> str:
        """Unpause a scheduled DAG (DAGs start paused) and return the run the scheduler creates."""
        self.wait_for_dag(dag_id)
        self.api("PATCH", f"dags/{dag_id}", json={"is_paused": False})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.api("GET", f"dags/{dag_id}/dagRuns")["dag_runs"]
            if runs:
                return str(runs[0]["dag_run_id"])
            time.sleep(1)
        raise TimeoutError(f"the scheduler created no run of {dag_id} in {timeout}s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return list(self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"])

    def wait_for_run(
        self, dag_id: str, run_id: str, timeout: float = 300, seen_states: dict[str, set[str]] | None = None
    ) -> str:
        """Wait for the run to end; record every state each task instance was seen in."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if seen_states is not None:
                for ti in self.task_instances(dag_id, run_id):
                    seen_states.setdefault(f"{ti['task_id']}[{ti['map_index']}]", set()).add(str(ti["state"]))
            state = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in ("success", "failed"):
                return str(state)
            time.sleep(0.5)
        raise TimeoutError(f"run {run_id} of {dag_id} did not end in {timeout}s")

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        answer = self.api(
            "GET",
            f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"map_index": map_index},
        )
        content = answer.get("content", "")
        if isinstance(content, list):
            return "\n".join(_log_line(item) for item in content)
        return str(content)


def _stop_group(process: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    # Whatever of the group outlived its leader (task processes, workers) goes too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def _log_line(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    details = {key: value for key, value in item.items() if key not in ("event", "timestamp", "level", "logger")}
    return f"{item.get('event', '')} {json.dumps(details, default=str)}" if details else str(item.get("event", ""))
