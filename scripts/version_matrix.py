"""
``make test-matrix``: the default pytest suite (unit, reliability, docs samples, ``dag.test()``
against the emulator) on every cell of the version matrix, then a table of the results.

Each cell is ``PYTHON-AIRFLOW`` (``3.12-3.3.2``) and runs as ``make test-cell PY=… AF=…`` in a
venv of its own (the Makefile says which). A Python that this machine does not have skips its
cells with a line saying so; a cell whose install or tests fail fails the whole run, after the
table. A failed cell's result line is followed by the tests that failed, from its junit XML (the
test id, where it failed, the first lines of its message; at most 20 tests), and they are listed
again just above the table, so that a CI log names them without the cell's own log (with no
junit XML, the end of that log stands in). Installs go one at a time, in the background; the
tests of ``--jobs`` cells (2) run at once, each as soon as its venv is ready. A test run mostly
waits (on the emulator's predictions, on ``dag.test()``'s triggers), so two side by side take
hardly longer than one (docs/versions.md has the times).

``--covered-by-make-test 3.11-3.3.2 --make-test-junit .venv/make-test-junit.xml`` (what
``.ci/run`` passes, through ``make test-matrix COVERED_BY_MAKE_TEST=1``) does not run that cell
again: ``make test`` has just run its tests, and more (the benchmark's smoke test), in the same
venv on the same tree. The table still lists it, "covered (ran in make test)", with the counts and
time of ``make test``'s own junit XML. Only the cell whose venv is ``make test``'s can be covered,
and only when that XML exists and has no failure; otherwise the cell runs as any other.

``--which-python 3.12`` prints the interpreter the Makefile uses for Python 3.12.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CELL = re.compile(r"^(\d+\.\d+)-(\d+\.\d+\.\d+)$")
SUMMARY = re.compile(r"\d+ (passed|failed|error|errors|deselected)\b.* in [\d.]+s")


def which_python(version: str) -> str | None:
    """``python3.X`` on PATH if it runs, else pyenv's newest 3.X.* (its shims fail for a version
    that is installed but not selected, so they are tried, not trusted)."""
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    pattern = os.path.join(pyenv_root, "versions", f"{version}.*", "bin", f"python{version}")
    pyenv = sorted(glob.glob(pattern), key=lambda path: [int(p) for p in re.findall(r"\d+", path.split("/")[-3])])
    for candidate in [shutil.which(f"python{version}"), *reversed(pyenv)]:
        if not candidate:
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


def spec_of(cell: Cell) -> str:
    return f"{cell.python}-{cell.airflow}"


@dataclass
class Cell:
    python: str
    airflow: str
    venv: str = ""
    interpreter: str | None = None
    state: str = "pending"  # skipped, install failed, failed, passed, covered (by make test)
    note: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    install_seconds: float | None = None
    test_seconds: float | None = None
    installed_python: str = ""
    # What failed, a few lines per test (``failure_report``), printed with the result and the table.
    failures: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"py{self.python}-af{self.airflow}"

    def make(self, target: str, *extra: str) -> list[str]:
        return ["make", "--no-print-directory", target, f"PY={self.python}", f"AF={self.airflow}", *extra]


def cell_venv(cell: Cell) -> str:
    answer = subprocess.run(
        [*cell.make("-s", "test-cell-venv")], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    return answer


def install(cell: Cell) -> bool:
    venv = REPO / cell.venv
    venv.mkdir(exist_ok=True)
    (venv / ".gitignore").write_text("*\n")
    log = venv / "matrix-install.log"
    started = time.monotonic()
    with log.open("w") as output:
        code = subprocess.run(
            cell.make("test-cell-install"), cwd=REPO, stdout=output, stderr=subprocess.STDOUT
        ).returncode
    cell.install_seconds = time.monotonic() - started
    if code:
        cell.state, cell.note = "install failed", f"see {log.relative_to(REPO)}"
        cell.failures = [f"last lines of {log.relative_to(REPO)}:", *indent(log_tail(log))]
        return False
    return True


def run_tests(cell: Cell) -> None:
    venv = REPO / cell.venv
    junit = venv / "matrix-junit.xml"
    junit.unlink(missing_ok=True)
    started = time.monotonic()
    log = venv / "matrix-tests.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            cell.make("test-cell", f"PYTEST_ARGS=--junitxml={junit} -p no:cacheprovider"),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        last = ""
        for line in process.stdout:
            output.write(line)
            if SUMMARY.search(line):
                last = line.strip().strip("=").strip()
        code = process.wait()
    cell.test_seconds = time.monotonic() - started
    cell.counts = junit_counts(junit)
    deselected = re.search(r"(\d+) deselected", last)
    cell.counts["deselected"] = int(deselected.group(1)) if deselected else 0
    cell.installed_python = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    cell.state = "passed" if code == 0 else "failed"
    if code:
        cell.note = f"{last or 'no summary'}; see {log.relative_to(REPO)}"
        # The junit XML names the failed tests; without it (pytest died, or make failed before
        # pytest ran) the end of the log is all there is.
        cell.failures = failure_report(junit) or [f"last lines of {log.relative_to(REPO)}:", *indent(log_tail(log))]
    print(f"[{cell.name}] {cell.state}: {last}", flush=True)
    for line in cell.failures:
        print(f"[{cell.name}]   {line}", flush=True)


MAKE_TEST_VENV = ".venv"


def covered_by_make_test(cell: Cell, junit: Path) -> bool:
    """Mark ``cell`` as run by ``make test`` (its counts and time from ``make test``'s junit XML),
    if its venv is ``make test``'s and that XML shows a green run; else leave it to be run."""
    if cell.venv != MAKE_TEST_VENV:
        print(f"[{cell.name}] not covered by make test: its venv is {cell.venv}, not {MAKE_TEST_VENV}", flush=True)
        return False
    python = REPO / cell.venv / "bin" / "python"
    counts = junit_counts(junit) if python.exists() else {}
    if not counts or counts["failed"]:
        why = f"no {python}" if not python.exists() else "no junit XML" if not counts else f"{counts['failed']} failed"
        print(f"[{cell.name}] not covered by make test ({why} in {junit}): running it", flush=True)
        return False
    cell.counts = {**counts, "deselected": 0}
    cell.test_seconds = junit_seconds(junit)
    cell.installed_python = subprocess.run(
        [str(python), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    cell.state, cell.note = "covered", "ran in make test"
    print(f"[{cell.name}] covered: make test ran its tests ({counts['passed']} passed), not run again", flush=True)
    return True


def junit_seconds(path: Path) -> float | None:
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")  # type: ignore[assignment]
    return None if suite is None or suite.get("time") is None else float(suite.get("time", 0))


def junit_counts(path: Path) -> dict[str, int]:
    if not path.exists():
        return {}
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")  # type: ignore[assignment]
    if suite is None:
        return {}
    total, failures, errors, skipped = (int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped"))
    return {"passed": total - failures - errors - skipped, "failed": failures + errors, "skipped": skipped}


MAX_FAILED_TESTS = 20
MAX_REASON_LINES = 3
MAX_LINE = 200


def node_id(classname: str, name: str, root: Path | None = None) -> str:
    """The pytest node id of a junit ``testcase``: ``tests.a.test_b.TestC`` + ``test_d`` is
    ``tests/a/test_b.py::TestC::test_d`` when tests/a/test_b.py exists under root (REPO); the
    XML has the dotted module and class path only."""
    root = root or REPO
    parts = classname.split(".") if classname else []
    for split in range(len(parts), 0, -1):
        module = "/".join(parts[:split]) + ".py"
        if (root / module).is_file():
            return "::".join([module, *parts[split:], name])
    return f"{classname}::{name}" if classname else name


def _short(line: str) -> str:
    line = line.rstrip()
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 3] + "..."


def failure_report(path: Path, root: Path | None = None) -> list[str]:
    """Lines naming each failed or errored test of a junit XML file, with a short reason: the
    first lines of its message and the ``file:line`` where it failed. At most
    ``MAX_FAILED_TESTS`` tests (then a line with how many more), a few lines each."""
    if not path.exists():
        return []
    try:
        document = ET.parse(path).getroot()
    except ET.ParseError:
        return []
    bad = []
    for case in document.iter("testcase"):
        problems = [child for child in case if child.tag in ("failure", "error")]
        if problems:
            bad.append((case, problems))
    lines: list[str] = []
    for case, problems in bad[:MAX_FAILED_TESTS]:
        where = ""
        reason: list[str] = []
        for problem in problems:
            kind = "FAILED" if problem.tag == "failure" else "ERROR"
            message = [line for line in (problem.get("message") or "").splitlines() if line.strip()]
            reason += [f"{kind}: {message[0]}" if message else kind, *message[1:]]
            # pytest's long report ends with the crash location, "tests/x.py:12: AssertionError".
            located = re.findall(r"^(\S+\.py:\d+): ", problem.text or "", re.MULTILINE)
            where = where or (located[-1] if located else "")
        lines.append(node_id(case.get("classname", ""), case.get("name", ""), root) + (f" ({where})" if where else ""))
        lines += ["    " + _short(line) for line in reason[:MAX_REASON_LINES]]
    if len(bad) > MAX_FAILED_TESTS:
        lines.append(f"... and {len(bad) - MAX_FAILED_TESTS} more failed tests")
    return lines


def log_tail(path: Path, count: int = 15) -> list[str]:
    try:
        return [_short(line) for line in path.read_text(errors="replace").splitlines()[-count:]]
    except OSError:
        return []


def indent(lines: list[str]) -> list[str]:
    return ["    " + line for line in lines]


def seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


def table(cells: list[Cell]) -> str:
    counts = ("passed", "failed", "skipped", "deselected")
    rows = [["cell", "venv", "Python", "Airflow", "result", *counts, "install s", "tests s"]]
    for cell in cells:
        rows.append(
            [
                cell.name,
                cell.venv,
                cell.installed_python or cell.python,
                cell.airflow,
                cell.state + (f" ({cell.note})" if cell.note else ""),
                *(str(cell.counts.get(key, "")) for key in counts),
                seconds(cell.install_seconds),
                seconds(cell.test_seconds),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)) + " |" for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cells", nargs="*", help="PYTHON-AIRFLOW, e.g. 3.12-3.3.2")
    parser.add_argument("--jobs", type=int, default=2, help="cells whose tests run at once (default 2)")
    parser.add_argument("--which-python", metavar="X.Y", help="print the interpreter for Python X.Y and exit")
    parser.add_argument(
        "--covered-by-make-test", metavar="CELL", help="a cell whose tests make test has just run in its venv"
    )
    parser.add_argument("--make-test-junit", type=Path, help="make test's junit XML (with --covered-by-make-test)")
    args = parser.parse_args()
    if args.which_python:
        found = which_python(args.which_python)
        if not found:
            print(f"Python {args.which_python} not found (python{args.which_python} on PATH, pyenv)", file=sys.stderr)
            return 1
        print(found)
        return 0

    cells = []
    for spec in args.cells:
        match = CELL.match(spec)
        if not match:
            parser.error(f"a cell is PYTHON-AIRFLOW, e.g. 3.12-3.3.2, not {spec!r}")
        cells.append(Cell(match.group(1), match.group(2)))
    if args.covered_by_make_test and not args.make_test_junit:
        parser.error("--covered-by-make-test needs --make-test-junit")
    started = time.monotonic()
    installs: dict[str, Future[bool]] = {}

    def install_then_test(cell: Cell) -> None:
        if not installs[cell.name].result():
            print(f"[{cell.name}] INSTALL FAILED after {seconds(cell.install_seconds)}s: {cell.note}", flush=True)
            return
        print(f"[{cell.name}] installed in {seconds(cell.install_seconds)}s; running the tests ...", flush=True)
        run_tests(cell)

    with ThreadPoolExecutor(max_workers=1) as installer, ThreadPoolExecutor(max_workers=args.jobs) as testers:
        for cell in cells:
            cell.interpreter = which_python(cell.python)
            cell.venv = cell_venv(cell)
            if spec_of(cell) == args.covered_by_make_test and covered_by_make_test(cell, REPO / args.make_test_junit):
                continue
            if cell.interpreter is None:
                cell.state = "skipped"
                cell.note = f"no Python {cell.python} on this machine (python{cell.python} on PATH, pyenv)"
                print(f"[{cell.name}] SKIPPED: {cell.note}", flush=True)
                continue
            print(f"[{cell.name}] installing into {cell.venv} ...", flush=True)
            installs[cell.name] = installer.submit(install, cell)
        for future in [testers.submit(install_then_test, cell) for cell in cells if cell.name in installs]:
            future.result()
    print()
    # What failed again, just above the table, so that the end of a CI log names it.
    for cell in cells:
        if cell.failures:
            print(f"{cell.name} {cell.state}:")
            print("\n".join(indent(cell.failures)))
            print()
    print(f"Version matrix ({time.monotonic() - started:.0f}s in all; install times overlap the tests):")
    print(table(cells))
    # A plain closing line, the sum over the cells, so a log reader sees how many tests ran.
    total = {kind: sum(cell.counts.get(kind, 0) for cell in cells) for kind in ("passed", "failed", "skipped")}
    print(f"matrix: {total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped")
    bad = [cell.name for cell in cells if cell.state in ("failed", "install failed")]
    if bad:
        print(f"FAILED cells: {', '.join(bad)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
