"""
``make package``: build the sdist and the wheel, check them, and prove the wheel works alone.

1. ``python -m build`` (the wheel is built from the sdist, so the sdist must be complete) into
   ``dist/``; ``twine check --strict``; the archives hold what they should and nothing else.
2. A clean venv in a temporary folder gets the wheel with its ``emulator`` extra, pinned to the
   versions ``.venv`` was tested with (``pip freeze`` as constraints), nothing from this checkout.
3. From there: ``airflow providers list`` shows the provider and its version, the connection
   type is registered, ``cometapi-emulator`` starts on a free port and answers, and the example
   DAGs taken from the sdist load without import errors and run green under
   ``airflow dags test`` against that emulator, storing their images.

Run by the repository's ``.venv`` Python; everything it starts, it stops; it prints each step.
"""

from __future__ import annotations

import datetime
import json
import os
import select
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DIST = REPO / "dist"
PROJECT = "airflow-provider-cometapi"
PACKAGE = "airflow_provider_cometapi"
EXAMPLE_DAG_IDS = ["cometapi_daily_images", "cometapi_daily_index", "cometapi_edit_chain", "cometapi_sensor_pattern"]
EMULATOR_KEY = "package-check-key"

WHEEL_MUST_HAVE = [
    f"{PACKAGE}/py.typed",
    f"{PACKAGE}/get_provider_info.py",
    f"{PACKAGE}/emulator/__main__.py",
    f"{PACKAGE}/hooks/cometapi.py",
    f"{PACKAGE}/triggers/prediction.py",
]
SDIST_MUST_HAVE = [
    "PKG-INFO",
    "pyproject.toml",
    "README.md",
    "LICENSE",
    "mkdocs.yml",
    "docs/index.md",
    *(f"dags_examples/{dag_id}.py" for dag_id in EXAMPLE_DAG_IDS),
    *WHEEL_MUST_HAVE,
]
NEVER_SHIPPED = ("tests/", ".venv/", "site/", "dist/", ".git/", "__pycache__", ".demo/", "demo-output/")


class CheckFailed(Exception):
    pass


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def run(
    command: list[str], *, env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 600, logs: bool = False
) -> str:
    """Run a command and return its stdout (with ``logs``, stderr too); its output is shown only when it fails."""
    started = time.monotonic()
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-6000:]
        raise CheckFailed(f"{' '.join(command)} exited {result.returncode}:\n{output}")
    elapsed = time.monotonic() - started
    print(f"    {Path(command[0]).name} {' '.join(command[1:4])[:70]} ... ok ({elapsed:.0f}s)", flush=True)
    return result.stdout + (result.stderr if logs else "")


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


# --- 1. Build and inspect -------------------------------------------------------------------


def build() -> tuple[Path, Path]:
    step("python -m build: sdist, then the wheel from the sdist")
    shutil.rmtree(DIST, ignore_errors=True)
    run([sys.executable, "-m", "build", "--outdir", str(DIST), str(REPO)])
    sdists, wheels = sorted(DIST.glob("*.tar.gz")), sorted(DIST.glob("*.whl"))
    expect(len(sdists) == 1 and len(wheels) == 1, f"expected one sdist and one wheel, got {list(DIST.iterdir())}")
    step("twine check --strict")
    run([sys.executable, "-m", "twine", "check", "--strict", str(sdists[0]), str(wheels[0])])
    return sdists[0], wheels[0]


def inspect(sdist: Path, wheel: Path, version: str) -> None:
    step("archive contents and metadata")
    with zipfile.ZipFile(wheel) as archive:
        wheel_names = archive.namelist()
        dist_info = f"{PACKAGE}-{version}.dist-info"
        metadata = archive.read(f"{dist_info}/METADATA").decode()
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    with tarfile.open(sdist) as archive:
        sdist_names = [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]
    for name in WHEEL_MUST_HAVE:
        expect(name in wheel_names, f"the wheel lacks {name}")
    for name in SDIST_MUST_HAVE:
        expect(name in sdist_names, f"the sdist lacks {name}")
    stray = [name for name in wheel_names if not name.startswith((f"{PACKAGE}/", f"{dist_info}/"))]
    expect(not stray, f"the wheel holds files outside the package: {stray[:5]}")
    for names, what in ((wheel_names, "wheel"), (sdist_names, "sdist")):
        stray = [name for name in names if any(part in f"/{name}" for part in (f"/{p}" for p in NEVER_SHIPPED))]
        expect(not stray, f"the {what} ships {stray[:5]}")
    for field in (
        f"Name: {PROJECT}",
        f"Version: {version}",
        "Requires-Python: >=3.11",
        "License-Expression: Apache-2.0",
        "License-File: LICENSE",
        "Description-Content-Type: text/markdown",
        "Classifier: Framework :: Apache Airflow :: Provider",
        "Provides-Extra: emulator",
        "Project-URL: ",
    ):
        expect(field in metadata, f"the wheel's METADATA lacks {field!r}")
    expect("[apache_airflow_provider]" in entry_points, "no apache_airflow_provider entry point")
    expect("cometapi-emulator = " in entry_points, "no cometapi-emulator console script")
    print(f"    {len(wheel_names)} files in the wheel, {len(sdist_names)} in the sdist", flush=True)


# --- 2. A clean venv ------------------------------------------------------------------------


def clean_env(venv: Path, home: Path) -> dict[str, str]:
    """The environment of a fresh shell with the venv activated: nothing of this checkout's setup."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "COMETAPI", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        AIRFLOW_HOME=str(home / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    return env


def install(wheel: Path, work: Path) -> Path:
    venv = work / "venv"
    step(f"clean venv in {venv}: the wheel with [emulator], pinned to what .venv was tested with")
    run([sys.executable, "-m", "venv", str(venv)], cwd=work)
    constraints = work / "constraints.txt"
    frozen = run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], cwd=work)
    constraints.write_text("".join(line + "\n" for line in frozen.splitlines() if not line.startswith(PROJECT)))
    run(
        [str(venv / "bin" / "pip"), "install", "--quiet", f"{wheel}[emulator]", "-c", str(constraints)],
        cwd=work,
        timeout=1200,
    )
    return venv


# --- 3. The installed wheel at work ---------------------------------------------------------


def check_installed(venv: Path, env: dict[str, str], work: Path, version: str) -> None:
    python = str(venv / "bin" / "python")
    step("the package is imported from the venv, not from this checkout")
    where = run([python, "-c", f"import {PACKAGE} as p; print(p.__file__, p.__version__)"], env=env, cwd=work)
    path, installed_version = where.split()
    expect(path.startswith(str(venv)), f"{PACKAGE} was imported from {path}")
    expect(installed_version == version, f"installed version {installed_version}, built {version}")

    step("airflow providers list / hooks")
    providers = json_output(run([str(venv / "bin" / "airflow"), "providers", "list", "-o", "json"], env=env, cwd=work))
    ours = [p for p in providers if p.get("package_name") == PROJECT]
    expect(len(ours) == 1, f"{PROJECT} is not in `airflow providers list`")
    expect(ours[0]["version"] == version, f"airflow providers list shows version {ours[0]['version']}, not {version}")
    print(f"    {PROJECT} {ours[0]['version']} registered", flush=True)
    hooks = run([str(venv / "bin" / "airflow"), "providers", "hooks", "-o", "json"], env=env, cwd=work)
    expect(
        any(row.get("connection_type") == "cometapi" for row in json_output(hooks)),
        "connection type cometapi missing",
    )


def json_output(text: str) -> list[dict[str, Any]]:
    """The JSON list a CLI printed with ``-o json`` (Airflow may print a line or two before it)."""
    start = text.find("\n[") + 1 if not text.startswith("[") else 0
    result: list[dict[str, Any]] = json.loads(text[start:])
    return result


def start_emulator(venv: Path, env: dict[str, str], work: Path) -> tuple[subprocess.Popen[str], str]:
    step("cometapi-emulator from the venv, on a free port")
    emulator = subprocess.Popen(
        [
            *(str(venv / "bin" / "cometapi-emulator"), "--host", "127.0.0.1", "--port", "0"),
            *("--api-key", EMULATOR_KEY, "--duration", "1", "--exit-with-parent"),
        ],
        env=env,
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=(work / "emulator.log").open("w"),
        text=True,
    )
    assert emulator.stdout is not None
    ready, _, _ = select.select([emulator.stdout], [], [], 60)
    line = emulator.stdout.readline() if ready else ""  # the ready line, once it listens
    expect(
        line.startswith("cometapi-emulator listening on "),
        f"the emulator did not start: {line!r} {(work / 'emulator.log').read_text()[-2000:]}",
    )
    base_url = line.rsplit(" ", 1)[1].strip()
    request = urllib.request.Request(f"{base_url}/v1/models", headers={"Authorization": f"Bearer {EMULATOR_KEY}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        models = json.load(response)["data"]
    expect(bool(models), "the emulator lists no models")
    try:
        urllib.request.urlopen(f"{base_url}/v1/models", timeout=10)
        raise CheckFailed("the emulator answered without a key")
    except urllib.error.HTTPError as error:
        expect(error.code == 401, f"no key: HTTP {error.code}, expected 401")
    print(f"    listening on {base_url}, {len(models)} models, 401 without the key", flush=True)
    return emulator, base_url


def run_examples(sdist: Path, venv: Path, env: dict[str, str], work: Path, base_url: str) -> None:
    step("example DAGs from the sdist: loaded and run with `airflow dags test` against the emulator")
    with tarfile.open(sdist) as archive:
        archive.extractall(work / "src", filter="data")
    dags = next((work / "src").iterdir()) / "dags_examples"
    output = work / "images"
    connection = {"conn_type": "cometapi", "password": EMULATOR_KEY, "host": base_url}
    env = {
        **env,
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW_CONN_COMETAPI_DEFAULT": json.dumps(connection),
        "AIRFLOW_VAR_COMETAPI_STORAGE_ROOT": output.as_uri(),
    }
    airflow = str(venv / "bin" / "airflow")
    run([airflow, "db", "migrate"], env=env, cwd=work)
    run([airflow, "dags", "reserialize"], env=env, cwd=work)  # parse the folder as the dag-processor does
    errors = run([airflow, "dags", "list-import-errors", "-o", "json"], env=env, cwd=work)
    expect("No data found" in errors or not json_output(errors), f"import errors:\n{errors}")
    listed = run([airflow, "dags", "list", "-o", "json"], env=env, cwd=work)
    found = {row["dag_id"] for row in json_output(listed)}
    expect(set(EXAMPLE_DAG_IDS) <= found, f"missing from `airflow dags list`: {set(EXAMPLE_DAG_IDS) - found}")
    day = datetime.date.today().isoformat()
    for dag_id in EXAMPLE_DAG_IDS:
        log = run([airflow, "dags", "test", dag_id, day], env=env, cwd=work, logs=True)
        expect("state=success" in log, f"{dag_id} did not succeed:\n{log[-4000:]}")
    stored = sorted(p.relative_to(output).as_posix() for p in output.rglob("*") if p.is_file())
    images = [name for name in stored if name.endswith((".webp", ".png", ".jpg"))]
    expect(f"{day}/index.html" in stored, f"cometapi_daily_index wrote no index.html: {stored}")
    # 3 daily images, 2 in the edit chain, 2 in the sensor pattern.
    expect(len(images) == 7, f"expected 7 stored images, got {images}")
    print(f"    {len(images)} images and {len(stored) - len(images)} sidecars/indexes stored", flush=True)


def main() -> int:
    started = time.monotonic()
    sys.path.insert(0, str(REPO))
    from airflow_provider_cometapi import __version__ as version

    work = Path(tempfile.mkdtemp(prefix="cometapi-package-check-"))
    emulator: subprocess.Popen[str] | None = None
    try:
        sdist, wheel = build()
        inspect(sdist, wheel, version)
        venv = install(wheel, work)
        env = clean_env(venv, work)
        check_installed(venv, env, work, version)
        emulator, base_url = start_emulator(venv, env, work)
        run_examples(sdist, venv, env, work, base_url)
    except CheckFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr, flush=True)
        return 1
    finally:
        if emulator is not None:
            emulator.terminate()
            emulator.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    print(f"Package check passed in {time.monotonic() - started:.0f}s: {sdist.name}, {wheel.name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
