"""scripts/version_matrix.py: a failed cell names its failed tests (from its junit XML); the cell
that `make test` ran is listed from its junit XML, not run again."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "version_matrix.py"


@pytest.fixture(scope="module")
def matrix() -> ModuleType:
    spec = importlib.util.spec_from_file_location("version_matrix", _SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["version_matrix"] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["version_matrix"]
    return module


def _case(classname: str, name: str, inner: str = "") -> str:
    return f'<testcase classname="{classname}" name="{name}" time="0.1">{inner}</testcase>'


def _junit(path: Path, *cases: str) -> Path:
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="{}" failures="0" '
        'errors="0" skipped="0">{}</testsuite></testsuites>'.format(len(cases), "".join(cases))
    )
    return path


def test_failure_report_names_each_failed_test_with_a_short_reason(matrix: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "tests" / "emulator").mkdir(parents=True)
    (tmp_path / "tests" / "emulator" / "test_process.py").touch()
    junit = _junit(
        tmp_path / "junit.xml",
        _case("tests.emulator.test_process", "test_ok"),
        _case(
            "tests.emulator.test_process",
            "test_exits_when_its_parent_dies",
            '<failure message="AssertionError: emulator outlived its parent&#10;assert False&#10; +  where False'
            ' = _wait_gone(123, 20)&#10;fourth line">def test():\n&gt;  assert ...\nE   AssertionError\n\n'
            "tests/emulator/test_process.py:156: AssertionError</failure>",
        ),
        _case(
            "tests.emulator.test_process.TestCli",
            "test_signal[SIGTERM]",
            '<error message="failed on setup with &quot;TimeoutError&quot;">long\n'
            "/usr/lib/python3.12/selectors.py:468: TimeoutError</error>",
        ),
        _case("tests.emulator.test_process", "test_skipped", '<skipped message="no" />'),
    )
    assert matrix.failure_report(junit, tmp_path) == [
        "tests/emulator/test_process.py::test_exits_when_its_parent_dies (tests/emulator/test_process.py:156)",
        "    FAILED: AssertionError: emulator outlived its parent",
        "    assert False",
        "     +  where False = _wait_gone(123, 20)",
        "tests/emulator/test_process.py::TestCli::test_signal[SIGTERM] (/usr/lib/python3.12/selectors.py:468)",
        '    ERROR: failed on setup with "TimeoutError"',
    ]


def test_failure_report_is_bounded(matrix: ModuleType, tmp_path: Path) -> None:
    long = "x" * 1000
    junit = _junit(
        tmp_path / "junit.xml",
        *(_case("tests.gone", f"test_{i}", f'<failure message="{long}" />') for i in range(25)),
    )
    lines = matrix.failure_report(junit, tmp_path)
    assert lines[0] == "tests.gone::test_0"  # no such file here: the dotted path as the XML has it
    assert len(lines) == 2 * matrix.MAX_FAILED_TESTS + 1
    assert lines[-1] == "... and 5 more failed tests"
    assert max(len(line) for line in lines) <= matrix.MAX_LINE + 4


def test_failure_report_without_a_usable_junit_file(matrix: ModuleType, tmp_path: Path) -> None:
    assert matrix.failure_report(tmp_path / "missing.xml") == []
    (tmp_path / "cut.xml").write_text("<testsuites><testsuite><testcase")
    assert matrix.failure_report(tmp_path / "cut.xml") == []


def test_a_failed_cell_prints_its_failed_tests_after_its_result(
    matrix: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The cell's `make test-cell` is replaced by a script that writes a junit XML with one
    # failure where pytest would, prints pytest's summary line and exits 1.
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    os.symlink(sys.executable, tmp_path / "venv" / "bin" / "python")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").touch()
    xml = _junit(tmp_path / "x.xml", _case("tests.test_a", "test_b", '<failure message="boom" />')).read_text()
    fake_pytest = (
        "import sys; from pathlib import Path\n"
        "junit = sys.argv[1].split('--junitxml=', 1)[1].split(' ')[0]\n"
        f"Path(junit).write_text({xml!r})\n"
        "print('1 failed, 3 passed in 1.00s')\n"
        "sys.exit(1)\n"
    )
    monkeypatch.setattr(matrix, "REPO", tmp_path)
    monkeypatch.setattr(matrix.Cell, "make", lambda self, target, *extra: [sys.executable, "-c", fake_pytest, *extra])
    cell = matrix.Cell("3.12", "3.3.2", venv="venv")
    matrix.run_tests(cell)
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "[py3.12-af3.3.2] failed: 1 failed, 3 passed in 1.00s",
        "[py3.12-af3.3.2]   tests/test_a.py::test_b",
        "[py3.12-af3.3.2]       FAILED: boom",
    ]
    assert cell.state == "failed"
    assert cell.failures == ["tests/test_a.py::test_b", "    FAILED: boom"]


def test_a_failed_cell_without_junit_shows_the_end_of_its_log(
    matrix: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    os.symlink(sys.executable, tmp_path / "venv" / "bin" / "python")
    monkeypatch.setattr(matrix, "REPO", tmp_path)
    crash = "print('ImportError: no module named airflow'); raise SystemExit(4)"
    monkeypatch.setattr(matrix.Cell, "make", lambda self, target, *extra: [sys.executable, "-c", crash])
    cell = matrix.Cell("3.12", "3.3.2", venv="venv")
    matrix.run_tests(cell)
    assert cell.failures == ["last lines of venv/matrix-tests.log:", "    ImportError: no module named airflow"]
    assert "[py3.12-af3.3.2]       ImportError: no module named airflow" in capsys.readouterr().out


def _make_test_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, matrix: ModuleType) -> None:
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    os.symlink(sys.executable, tmp_path / ".venv" / "bin" / "python")
    monkeypatch.setattr(matrix, "REPO", tmp_path)


def _suite(path: Path, tests: int, failures: int = 0, skipped: int = 0) -> Path:
    path.write_text(
        f'<testsuites><testsuite name="pytest" tests="{tests}" failures="{failures}" errors="0" '
        f'skipped="{skipped}" time="180.5"></testsuite></testsuites>'
    )
    return path


def test_the_cell_make_test_ran_is_listed_from_its_junit(
    matrix: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _make_test_venv(tmp_path, monkeypatch, matrix)
    cell = matrix.Cell("3.11", "3.3.2", venv=".venv")
    assert matrix.covered_by_make_test(cell, _suite(tmp_path / "junit.xml", tests=720, skipped=2))
    assert (cell.state, cell.note) == ("covered", "ran in make test")
    assert cell.counts == {"passed": 718, "failed": 0, "skipped": 2, "deselected": 0}
    assert cell.test_seconds == 180.5
    assert cell.installed_python == ".".join(map(str, sys.version_info[:3]))
    row = [value.strip() for value in matrix.table([cell]).splitlines()[-1].strip("|").split("|")]
    expected = ["py3.11-af3.3.2", ".venv", cell.installed_python, "3.3.2", "covered (ran in make test)"]
    assert row == [*expected, "718", "0", "2", "0", "", "180"]


@pytest.mark.parametrize("case", ["no junit", "a failure", "another venv", "no venv"])
def test_a_cell_is_run_unless_make_test_ran_it_green(
    matrix: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    _make_test_venv(tmp_path, monkeypatch, matrix)
    junit = tmp_path / "junit.xml"
    venv = ".venv"
    if case == "a failure":
        _suite(junit, tests=720, failures=1)
    elif case == "another venv":
        _suite(junit, tests=720)
        venv = ".venv-py3.12-af3.3.2"
    elif case == "no venv":
        _suite(junit, tests=720)
        (tmp_path / ".venv" / "bin" / "python").unlink()
    cell = matrix.Cell("3.11", "3.3.2", venv=venv)
    assert not matrix.covered_by_make_test(cell, junit)
    assert (cell.state, cell.counts) == ("pending", {})
