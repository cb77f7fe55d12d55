"""
``make demo``: run the daily example DAG for today through Airflow and show the stored images.

Against a local ``cometapi-emulator`` by default, or the real gateway when ``COMETAPI_API_KEY``
is set (``COMETAPI_BASE_URL`` overrides the base URL). Airflow state lives in ``.demo/`` and the
images in ``demo-output/``; everything this script starts, it stops.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from airflow_provider_cometapi.emulator import EmulatorProcess

REPO = Path(__file__).resolve().parents[1]
DEMO_HOME = REPO / ".demo"
OUTPUT = REPO / "demo-output"
PROGRESS = re.compile(r"Created prediction|status (succeeded|failed)|Stored output|Indexed|ERROR|Traceback")


def airflow(env: dict[str, str], *args: str, log_name: str | None = None) -> tuple[int, str]:
    """Run the Airflow CLI; echo the lines that show progress; keep the full output in .demo/."""
    command = [sys.executable, "-m", "airflow", *args]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if log_name and PROGRESS.search(line):
            print("   ", _short(line))
    output = "".join(lines)
    if log_name:
        (DEMO_HOME / log_name).write_text(output)
    return process.wait(), output


def _short(line: str) -> str:
    # Airflow's log lines carry a timestamp, level and logger; the message is what a reader wants.
    match = re.search(r"\]\s+(.*?)\s+\[", line)
    return (match.group(1) if match else line).strip()[:160]


def main() -> int:
    today = datetime.date.today().isoformat()
    DEMO_HOME.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(DEMO_HOME / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags_examples"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_VAR_COMETAPI_STORAGE_ROOT": OUTPUT.as_uri(),
    }
    emulator = None
    if os.environ.get("COMETAPI_API_KEY"):
        base_url = os.environ.get("COMETAPI_BASE_URL", "")
        print(f"Using the real CometAPI gateway {base_url or 'https://api.cometapi.com'} (COMETAPI_API_KEY is set).")
        connection = {"conn_type": "cometapi", "password": os.environ["COMETAPI_API_KEY"], "host": base_url}
        env["AIRFLOW_CONN_COMETAPI_DEFAULT"] = json.dumps(connection)
    else:
        emulator = EmulatorProcess(api_key="demo-key-not-secret", duration=3.0).start()
        print(
            f"Started cometapi-emulator (pid {emulator.pid}) on {emulator.base_url}; "
            "set COMETAPI_API_KEY to use the real API."
        )
        env.update(emulator.airflow_env())
    started = time.monotonic()
    try:
        print("Preparing the Airflow metadata database in .demo/ ...")
        code, output = airflow(env, "db", "migrate")
        if code:
            print(output[-3000:])
            return code
        print(f"Running DAG cometapi_daily_images for {today} (airflow dags test) ...")
        code, output = airflow(
            env, "dags", "test", "cometapi_daily_images", today, log_name="cometapi_daily_images.log"
        )
        succeeded = code == 0 and "state=success" in output
        if succeeded:
            print(f"Running DAG cometapi_daily_index for {today} ...")
            code, index_output = airflow(
                env, "dags", "test", "cometapi_daily_index", today, log_name="cometapi_daily_index.log"
            )
            succeeded = code == 0 and "state=success" in index_output
    finally:
        stats = None
        if emulator:
            try:
                stats = emulator.stats(detail=False)
            finally:
                emulator.stop()
    folder = OUTPUT / today
    images = (
        sorted(p for p in folder.glob("*") if p.suffix.lower() in {".webp", ".png", ".jpg"}) if folder.exists() else []
    )
    print()
    print(f"{'Done' if succeeded and images else 'FAILED'} in {time.monotonic() - started:.0f}s.")
    if stats:
        print(
            f"Emulator: {stats['creates']} predictions created, {stats['polls']} polls, "
            f"{stats['file_downloads']} downloads."
        )
    print(f"Stored in {folder}:")
    for path in sorted(folder.glob("*")) if folder.exists() else []:
        print(f"  {path.relative_to(REPO)}  ({path.stat().st_size:,} bytes)")
    if not (succeeded and images):
        print(f"See the full Airflow output in {DEMO_HOME.relative_to(REPO)}/*.log")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
