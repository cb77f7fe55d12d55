"""`make airflow`: the local stack answers on its URL with the example DAGs parsed, and Ctrl-C
(SIGINT to its process group, as a terminal sends it) or SIGTERM to make (as a service manager
sends it) stops every process it started."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.harness import ADMIN_USER, REPO, free_port

UP = re.compile(r"Airflow is up: (\S+)\s+login: (\S+) / (\S+)")
EMULATOR = re.compile(r"cometapi-emulator on (http://127\.0\.0\.1:(\d+))")
STOP_BOUND = 60  # s from the signal to the last process gone; the script's own bound is 30 s per group, all at once


def example_dag_ids() -> set[str]:
    """Every DAG of dags_examples/ as the dag-processor finds it: parsed in a DagBag here (the
    TaskFlow examples' ids are their ``@dag`` functions' names, which no regex on ``dag_id=``
    sees; the folder's .airflowignore leaves demo.py out, as it does for the stack)."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags_examples"))
    assert not bag.import_errors, bag.import_errors
    return set(bag.dag_ids)


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time), read from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table[int(entry.name)] = (int(fields[1]), fields[19])
    return table


def descendants(root: int) -> dict[int, str]:
    table = process_table()
    found = {root: table[root][1]} if root in table else {}
    grew = True
    while grew:
        grew = False
        for pid, (parent, started) in table.items():
            if parent in found and pid not in found:
                found[pid] = started
                grew = True
    return found


def alive(pid: int, started: str) -> bool:
    """The same process (not a reused pid), and not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == started and fields[0] != "Z"


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_make_airflow_answers_with_the_examples_and_stops_cleanly(tmp_path, stop):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "COMETAPI_"))}
    env["AIRFLOW_LOCAL_HOME"] = str(tmp_path / "airflow-local")
    make = subprocess.Popen(
        ["make", "--no-print-directory", "airflow", f"AIRFLOW_PORT={port}"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a group of its own, as a terminal's foreground job
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(make.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    started: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 300
        while not (up := next((m for line in lines if (m := UP.search(line))), None)):
            assert make.poll() is None, "make airflow exited early:\n" + "".join(lines)[-4000:]
            assert time.monotonic() < deadline, "make airflow printed no URL in 300 s:\n" + "".join(lines)[-4000:]
            time.sleep(0.5)
        url, user, password = up.groups()
        assert url == f"http://127.0.0.1:{port}"
        assert user == ADMIN_USER
        emulator_port = int(next(m for line in lines if (m := EMULATOR.search(line))).group(2))

        assert requests.get(url, timeout=10).ok  # the UI's page
        token = requests.post(f"{url}/auth/token", json={"username": user, "password": password}, timeout=30)
        token.raise_for_status()
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        expected = example_dag_ids()
        assert len(expected) >= 6  # four operator examples, two TaskFlow ones
        deadline = time.monotonic() + 180
        while True:
            dags = requests.get(f"{url}/api/v2/dags", headers=headers, params={"limit": 100}, timeout=30).json()
            parsed = {dag["dag_id"] for dag in dags["dags"]}
            if expected <= parsed:
                break
            assert time.monotonic() < deadline, f"parsed {sorted(parsed)}, expected {sorted(expected)}"
            time.sleep(2)
        errors = requests.get(f"{url}/api/v2/importErrors", headers=headers, timeout=30).json()
        assert errors["total_entries"] == 0, errors

        started = descendants(make.pid)
        # make, the script, the emulator, the four components and their children (api workers...).
        assert len(started) >= 7, started
        interrupted = time.monotonic()
        if stop == "ctrl-c":
            os.killpg(make.pid, signal.SIGINT)
        else:
            make.send_signal(signal.SIGTERM)  # make passes it on to the script
        make.wait(timeout=STOP_BOUND)
        while any(alive(pid, when) for pid, when in started.items()) and time.monotonic() - interrupted < STOP_BOUND:
            time.sleep(0.2)
        took = time.monotonic() - interrupted
        reader.join(timeout=10)
        output = "".join(lines)
        left = [pid for pid, when in started.items() if alive(pid, when)]
        assert not left, f"still running {took:.0f} s after {stop}: {left}\n{output[-3000:]}"
        print(f"make airflow stopped {len(started)} processes in {took:.1f} s after {stop}")
        assert port_free(port)
        assert port_free(emulator_port)
        assert "Stopped everything make airflow started." in output
        assert "Traceback" not in output, output[-4000:]
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(timeout=10)
        for pid, when in started.items():
            if alive(pid, when):
                os.kill(pid, signal.SIGKILL)
