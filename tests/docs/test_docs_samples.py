"""
Every code sample in the README and in docs/ is run, or checked against what it names.

- ``python``: executed inside a ``with DAG(...)`` block (so a sample that only builds operators
  makes real tasks), with the provider importable and ``cometapi_default`` leading to the
  test emulator; every DAG it made is validated and serialised as the dag-processor would.
  A block made only of snippet includes (``--8<--``) must include an existing example DAG.
- ``bash``: each command is checked against what it names: make targets (and ``VAR=value``
  settings, ``?=`` variables) in the Makefile, connections defined by ``AIRFLOW_CONN_*`` read
  through Airflow and the hook (and, for the local emulator, tested with the Test button's call
  against a real emulator), ``airflow``
  commands parsed by Airflow's own CLI parser, ``cometapi-emulator`` flags and fault rules by
  the emulator's, ``pip install`` names and extras against pyproject.toml. A command the test
  does not know fails it, so a new kind of sample needs a check here.
- ``json``: parsed; a create body is sent to the emulator; a stats sample has the real keys.
- ``text``: output shown to the reader (logs, listings), not run. Any other language, or none,
  fails the test.

A block that is deliberately not runnable is preceded by
``<!-- docs-sample: not-runnable (why) -->``; there are few.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from airflow_provider_cometapi.emulator import EmulatorProcess

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
EXAMPLES = REPO / "dags_examples"

FENCE = re.compile(r"^(?P<fence>`{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S)
NOT_RUNNABLE = re.compile(r"<!--\s*docs-sample:\s*not-runnable\s*\((?P<reason>[^)]+)\)\s*-->\s*\n$")
SNIPPET = re.compile(r'^--8<--\s+"(?P<path>[^"]+)"\s*$')
MAX_NOT_RUNNABLE = 3


@dataclass(frozen=True)
class Sample:
    page: Path
    line: int
    language: str
    body: str
    not_runnable: str | None

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def collect_samples() -> list[Sample]:
    samples = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            info = match.group("info").strip()
            marker = NOT_RUNNABLE.search(text[: match.start()][-200:])
            samples.append(
                Sample(
                    page=page,
                    line=text.count("\n", 0, match.start()) + 1,
                    language=info.split()[0] if info else "",
                    body=match.group("body"),
                    not_runnable=marker.group("reason") if marker else None,
                )
            )
    return samples


SAMPLES = collect_samples()


def samples_in(*languages: str) -> list[Any]:
    return [
        pytest.param(sample, id=sample.name, marks=[pytest.mark.skip(reason=sample.not_runnable)])
        if sample.not_runnable
        else pytest.param(sample, id=sample.name)
        for sample in SAMPLES
        if sample.language in languages
    ]


def test_every_sample_has_a_language_the_tests_check():
    """``text`` is for output (a log excerpt, a listing), never for something a reader runs."""
    unchecked = [s.name for s in SAMPLES if s.language not in {"python", "bash", "json", "text"}]
    assert not unchecked, f"code blocks in a language this test does not check (or untagged): {unchecked}"


def test_not_runnable_samples_are_few():
    marked = [s.name for s in SAMPLES if s.not_runnable]
    assert len(marked) <= MAX_NOT_RUNNABLE, marked


# --- Python ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sample", samples_in("python"))
def test_python_sample_runs(sample: Sample, cometapi_conn: EmulatorProcess) -> None:
    includes = [SNIPPET.match(line) for line in sample.body.strip().splitlines()]
    if all(includes):
        check_included_example_dags(sample, [m.group("path") for m in includes if m])
        return

    from airflow.sdk import DAG

    namespace: dict[str, Any] = {"__name__": "docs_sample"}
    code = compile(sample.body, sample.name, "exec")
    # The sample may change the environment (a connection); the next one starts clean.
    with mock.patch.dict(os.environ), DAG(dag_id="docs_sample", schedule=None, start_date=START) as outer:
        exec(code, namespace)
    dags = [outer, *(value for value in namespace.values() if isinstance(value, DAG) and value is not outer)]
    for dag in dags:
        if dag.task_dict:
            check_dag(dag)


START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def check_dag(dag: Any) -> None:
    """What the dag-processor does with a DAG file's DAG: validate it and serialise it."""
    try:
        from airflow.serialization.serialized_objects import DagSerialization
    except ImportError:  # Airflow 3.1 names it SerializedDAG
        from airflow.serialization.serialized_objects import SerializedDAG as DagSerialization

    dag.validate()
    restored = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    assert set(restored.task_ids) == set(dag.task_ids)


def check_included_example_dags(sample: Sample, paths: list[str]) -> None:
    for path in paths:
        included = REPO / path
        assert included.is_file(), f"{sample.name} includes {path}, which does not exist"
        assert included.parent == EXAMPLES, f"{sample.name}: only example DAGs are included as code"
        compile(included.read_text(), path, "exec")  # dag.test() of each runs in tests/integration
        title = sample.page.read_text().splitlines()[0].removeprefix("# ").strip()
        source = included.read_text()
        # A DAG's id: given, or the name of its @dag function.
        assert f'dag_id="{title}"' in source or f"\ndef {title}(" in source, (
            f"{sample.name}: page {title!r} shows {path}"
        )


def test_every_example_dag_has_a_page():
    ignored = [line.strip() for line in (EXAMPLES / ".airflowignore").read_text().splitlines() if line.strip()]
    dag_files = [p for p in EXAMPLES.glob("*.py") if not any(re.search(pattern, p.name) for pattern in ignored)]
    assert dag_files
    for dag_file in dag_files:
        page = REPO / "docs" / "examples" / f"{dag_file.stem}.md"
        assert page.is_file(), f"{dag_file.name} has no page in docs/examples/"
        assert f'--8<-- "dags_examples/{dag_file.name}"' in page.read_text()
        assert f"examples/{dag_file.stem}.md" in (REPO / "mkdocs.yml").read_text()


# --- Shell ----------------------------------------------------------------------------------


def commands(body: str) -> list[list[str]]:
    return [words for line in body.splitlines() if (words := shlex.split(line, comments=True))]


@pytest.mark.parametrize("sample", samples_in("bash"))
def test_shell_sample_names_what_exists(sample: Sample, monkeypatch: pytest.MonkeyPatch) -> None:
    found = commands(sample.body)
    assert found, f"{sample.name} has no command"
    for words in found:
        check_command(words, sample, monkeypatch)


def check_command(words: list[str], sample: Sample, monkeypatch: pytest.MonkeyPatch) -> None:
    if words[0] == "export":
        words = words[1:]
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        name, _, value = words.pop(0).partition("=")
        check_environment_variable(name, value, monkeypatch)
    if not words:
        return
    program, args = words[0], words[1:]
    where = f"{sample.name}: {shlex.join(words)}"
    if program == "make":
        settings = {arg.partition("=")[0] for arg in args if re.match(r"^[A-Z_][A-Z0-9_]*=", arg)}
        unknown = {name for name in settings if not re.search(rf"^{name} \?=", MAKEFILE.read_text(), re.M)}
        assert not unknown, f"{where}: the Makefile has no `?=` variable {unknown}"
        missing = {arg for arg in args if "=" not in arg} - make_targets()
        assert not missing, f"{where}: no such make target {missing}"
    elif program == "pip":
        check_pip_install(args, where)
    elif program == "cometapi-emulator":
        check_emulator_arguments(args, where)
    elif program == "curl":
        check_emulator_control_call(args, where)
    elif program == "airflow":
        check_airflow_command(args, where)
    elif program in {"python", "python3", ".venv/bin/python"}:
        check_script(args, where)
    elif program == "git" and args[:1] == ["clone"]:
        pass
    else:
        pytest.fail(f"{where}: this test does not know how to check `{program}`; add a check or mark the block")


MAKEFILE = REPO / "Makefile"


@cache
def make_targets() -> frozenset[str]:
    makefile = MAKEFILE.read_text()
    return frozenset(re.findall(r"^([a-z][a-z0-9_-]*):(?!=)", makefile, re.M))


def check_pip_install(args: list[str], where: str) -> None:
    from packaging.requirements import Requirement

    assert args[:1] == ["install"], where
    metadata = importlib.metadata.metadata("airflow-provider-cometapi")
    for spec in args[1:]:
        requirement = Requirement(spec)
        assert requirement.name == metadata["Name"], f"{where}: installs {requirement.name}, not this provider"
        unknown = requirement.extras - set(metadata.get_all("Provides-Extra") or ())
        assert not unknown, f"{where}: no such extra {unknown}"


# Options the docs set for an optional provider (an extra of ours): checked where it is installed
# (``make test``), skipped where it is not (the version matrix's cells).
OPTIONAL_PROVIDER_SECTIONS = {"openlineage": "airflow.providers.openlineage"}


def check_environment_variable(name: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if name.startswith("AIRFLOW_CONN_"):
        check_connection(name.removeprefix("AIRFLOW_CONN_").lower(), value, monkeypatch)
    elif name.startswith("AIRFLOW_VAR_"):
        variable = name.removeprefix("AIRFLOW_VAR_").lower()
        assert any(variable in p.read_text() for p in EXAMPLES.glob("*.py")), f"no example DAG reads {variable}"
    elif name.startswith("AIRFLOW__"):
        from airflow.configuration import conf

        section, _, key = name.removeprefix("AIRFLOW__").lower().partition("__")
        if (
            section in OPTIONAL_PROVIDER_SECTIONS
            and importlib.util.find_spec(OPTIONAL_PROVIDER_SECTIONS[section]) is None
        ):
            pytest.skip(f"[{section}] belongs to {OPTIONAL_PROVIDER_SECTIONS[section]}, not installed here")
        assert conf.has_option(section, key), f"Airflow has no option [{section}] {key}"
    elif name in {"COMETAPI_API_KEY", "COMETAPI_BASE_URL"}:
        assert name in (EXAMPLES / "demo.py").read_text(), f"make demo does not read {name}"
    else:
        pytest.fail(f"this test does not know the environment variable {name}")


def check_connection(conn_id: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read the connection as Airflow does; one aimed at the local emulator must pass the Test button."""
    from airflow.providers.common.compat.sdk import BaseHook

    from airflow_provider_cometapi.api import DEFAULT_BASE_URL
    from airflow_provider_cometapi.hooks.cometapi import CometAPIHook

    env = f"AIRFLOW_CONN_{conn_id.upper()}"
    monkeypatch.setenv(env, value)
    assert BaseHook.get_connection(conn_id).conn_type == "cometapi"
    settings = CometAPIHook(conn_id).settings
    assert settings.api_key
    local = re.search(r"127\.0\.0\.1:8765", settings.base_url)
    if not local:
        assert settings.base_url == DEFAULT_BASE_URL, value
        return
    # The docs' fixed port stands for wherever the emulator runs; here a free port.
    with EmulatorProcess(api_key=settings.api_key, duration=0.1) as emulator:
        monkeypatch.setenv(env, value.replace("127.0.0.1:8765", emulator.base_url.split("://", 1)[1]))
        ok, message = CometAPIHook(conn_id).test_connection()
    assert ok, f"{value}: {message}"


def emulator_arguments(args: list[str]) -> Any:
    from airflow_provider_cometapi.emulator.__main__ import build_parser

    try:
        return build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"cometapi-emulator rejects {args}")


def check_emulator_arguments(args: list[str], where: str) -> None:
    from airflow_provider_cometapi.emulator.faults import parse_rule

    parsed = emulator_arguments(args)
    for rule in parsed.fault or ():
        parse_rule(rule)


def check_emulator_control_call(args: list[str], where: str) -> None:
    from airflow_provider_cometapi.emulator.faults import parse_rule

    method = args[args.index("-X") + 1] if "-X" in args else "GET"
    body = args[args.index("-d") + 1] if "-d" in args else None
    url = next(arg for arg in args if "localhost:8765" in arg or "127.0.0.1:8765" in arg)
    path = "/" + url.split("/", 1)[1]
    assert (method, path) in emulator_routes(), f"{where}: the emulator has no route {method} {path}"
    if path.startswith("/_emulator/"):
        headers = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in ("-H", "--header")]
        assert any(h.lower().startswith("authorization: bearer ") for h in headers), (
            f"{where}: control routes need the key"
        )
    if path == "/_emulator/faults" and method == "POST":
        assert body is not None, where
        parse_rule(json.loads(body))


@cache
def emulator_routes() -> frozenset[tuple[str, str]]:
    from airflow_provider_cometapi.emulator import EmulatorConfig, create_app

    app = create_app(EmulatorConfig())
    return frozenset((route.method, route.resource.canonical) for route in app.router.routes() if route.resource)


def check_airflow_command(args: list[str], where: str) -> None:
    from airflow.cli.cli_parser import get_parser

    try:
        get_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"{where}: Airflow's CLI rejects it")


def check_script(args: list[str], where: str) -> None:
    script = REPO / args[0]
    assert script.is_file(), f"{where}: no such script"
    help_text = script_help(script)
    for flag in (arg.split("=")[0] for arg in args[1:] if arg.startswith("--")):
        assert flag in help_text, f"{where}: {script.name} has no {flag}"


@cache
def script_help(script: Path) -> str:
    return subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout


# --- JSON -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sample", samples_in("json"))
def test_json_sample_is_what_the_emulator_takes_or_gives(sample: Sample, emulator: EmulatorProcess) -> None:
    value = json.loads(sample.body)
    if "input" in value:
        request = urllib.request.Request(
            f"{emulator.base_url}/replicate/v1/models/black-forest-labs/flux-schnell/predictions",
            data=json.dumps(value).encode(),
            headers={"Authorization": f"Bearer {emulator.api_key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201
    elif "creates" in value:
        assert set(value) == set(emulator.stats())


# --- The README and the quickstart agree ----------------------------------------------------


def test_quickstart_starts_with_the_readmes_two_commands():
    readme = next(s for s in SAMPLES if s.page.name == "README.md" and s.language == "bash")
    quickstart = next(s for s in SAMPLES if s.page.name == "quickstart.md" and s.language == "bash")
    assert [words[:2] for words in commands(readme.body)] == [["make", "demo"], ["make", "test"]]
    assert quickstart.body == readme.body


def test_connection_page_lists_every_field_of_the_form():
    from airflow_provider_cometapi.get_provider_info import get_provider_info

    page = (REPO / "docs" / "connection.md").read_text()
    (connection_type,) = get_provider_info()["connection-types"]
    for field in connection_type["ui-field-behaviour"]["relabeling"].values():
        assert f"| {field} |" in page, f"the form's {field!r} field is not in the table"
    for key, field in connection_type["conn-fields"].items():
        label = field["label"]
        assert f"| {label} | extra `{key}` |" in page, f"the form's {label!r} field is not in the table"


def test_every_operator_sensor_trigger_and_hook_has_a_reference_entry():
    """The reference is generated from docstrings, but only for what a page names with ``:::``."""
    import importlib
    import inspect
    import pkgutil

    import airflow_provider_cometapi

    reference = "".join(page.read_text() for page in (REPO / "docs" / "reference").glob("*.md"))
    roles = ("hooks", "operators", "sensors", "triggers", "links")
    public = [
        f"{module.__name__}.{name}"
        for role in roles
        for info in pkgutil.iter_modules([str(Path(airflow_provider_cometapi.__file__).parent / role)])
        for module in [importlib.import_module(f"airflow_provider_cometapi.{role}.{info.name}")]
        for name, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__ and not name.startswith("_") and cls.__doc__
    ]
    assert len(public) >= 6
    missing = [name for name in public if f"::: {name}\n" not in reference]
    assert not missing, f"no reference entry for {missing}"
