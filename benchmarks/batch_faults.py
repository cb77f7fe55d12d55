"""Faults mid-batch: the e2e batch test run as a benchmark, its figures collected.

``tests/e2e/test_batch.py`` runs a 30-input deferrable batch in a real deployment (PostgreSQL,
LocalExecutor with two slots, triggerer) and SIGKILLs the task process while it creates, stops
the triggerer and starts a new one while the retry waits, and SIGKILLs the task again while it
stores. This script runs that test (``pytest`` in this process, the test's own machinery and
assertions) with a plugin that, once the test body is done and before its deployment is torn
down, reads what the goals are about:

- the final manifest: lines, inputs listed exactly once, lines succeeded;
- the emulator's creates against the inputs (duplicates = creates - inputs), and cancels;
- the stored files: images decoded (each one whole), sidecars, ``.partial`` leftovers;
- the faults the test made (from its own output): creates before the first kill, images stored
  and downloads started at the second, the triggerer restart, tries, seconds.

Needs PostgreSQL on 127.0.0.1:5432 (user postgres), as ``make e2e`` does.

    .venv/bin/python benchmarks/batch_faults.py --json bench-output/batch_faults.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from _shared import stored_outputs  # beside this script

REPO = Path(__file__).resolve().parents[1]
TEST = "tests/e2e/test_batch.py"
# What the test prints about its faults: a figure's name, and the pattern whose group is its value.
PRINTED = {
    "creates_before_first_kill": r"killed try 1 after (\d+) creates",
    "stored_at_second_kill": r"killed try 2 while storing: (\d+) images stored",
    "downloads_at_second_kill": r"images stored, (\d+) downloads started",
    "test_run_s": r"run succeeded after (\d+)s",
}


def manifest_figures(folder: Path, inputs: int) -> dict[str, Any]:
    """The final manifest's lines against the inputs, and what it says was stored."""
    manifests = sorted(folder.glob("*.manifest.jsonl"))
    if len(manifests) != 1:
        return {"manifests": len(manifests)}
    entries = [json.loads(line) for line in manifests[0].read_text().splitlines() if line.strip()]
    indexes = Counter(entry["index"] for entry in entries)
    listed = [uri for entry in entries for uri in entry.get("stored") or []]
    return {
        "manifests": 1,
        "lines": len(entries),
        "inputs_listed_once": sum(1 for index in range(inputs) if indexes[index] == 1),
        "inputs_listed_twice_or_more": sum(1 for count in indexes.values() if count > 1),
        "distinct_prediction_ids": len({entry["prediction_id"] for entry in entries if entry["prediction_id"]}),
        "statuses": dict(Counter(str(entry["status"]) for entry in entries)),
        "stored_uris": len(listed),
        "stored_uris_missing": sum(1 for uri in listed if not Path(uri.removeprefix("file://")).exists()),
    }


class Collector:
    """A pytest plugin: the figures of the batch test, read while its deployment still runs."""

    def __init__(self) -> None:
        self.figures: dict[str, Any] = {}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: Any) -> Any:
        started = time.monotonic()
        yield
        self.figures["test_body_s"] = time.monotonic() - started
        stack, emulator = item.funcargs.get("stack"), item.funcargs.get("emulator")
        if stack is None or emulator is None:
            return
        from tests.e2e.dags.e2e_batch_dags import BATCH_SIZE

        stats = emulator.stats(detail=False)
        destination = stack.home / "images" / "batch"
        self.figures |= {
            "inputs": BATCH_SIZE,
            "creates": int(stats["creates"]),
            "duplicates": int(stats["creates"]) - BATCH_SIZE,
            "cancels": int(stats["cancels"]),
            "manifest": manifest_figures(destination, BATCH_SIZE),
            "stored": stored_outputs(destination),
        }

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when != "call":
            return
        self.figures["outcome"] = report.outcome
        self.figures["duration_s"] = report.duration
        if report.failed:
            self.figures["failure"] = str(report.longrepr)[-3000:]
        output = report.capstdout
        for name, pattern in PRINTED.items():
            match = re.search(pattern, output)
            self.figures[name] = int(match.group(1)) if match else None
        self.figures["triggerer_restarts"] = output.count("triggerer restarted")


def goals(figures: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Each goal of the faults benchmark: its name, the figure, and whether it held."""
    inputs, manifest, stored = figures.get("inputs", 0), figures.get("manifest", {}), figures.get("stored", {})
    return [
        (
            "the final manifest lists every input once",
            f"{manifest.get('inputs_listed_once', 0)} of {inputs} inputs once, "
            f"{manifest.get('inputs_listed_twice_or_more', 0)} more than once, {manifest.get('lines', 0)} lines",
            inputs > 0 and manifest.get("inputs_listed_once") == inputs == manifest.get("lines"),
        ),
        (
            "creates equal inputs",
            f"{figures.get('creates', 0)} creates for {inputs} inputs ({figures.get('cancels', 0)} cancels)",
            inputs > 0 and figures.get("creates") == inputs,
        ),
        (
            "every stored file is whole",
            f"{stored.get('images', 0)} images decoded, {stored.get('broken_images', 0)} broken, "
            f"{stored.get('sidecars', 0)} sidecars, {stored.get('partials', 0)} partial files left, "
            f"{manifest.get('stored_uris_missing', 0)} listed files missing",
            inputs > 0
            and stored.get("images") == inputs
            and not stored.get("broken_images")
            and not stored.get("partials")
            and manifest.get("stored_uris_missing") == 0,
        ),
        ("the test's own assertions", str(figures.get("outcome")), figures.get("outcome") == "passed"),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)

    sys.path.insert(0, str(REPO))
    collector = Collector()
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    code = pytest.main(["-q", "-o", "addopts=", "-p", "no:cacheprovider", str(REPO / TEST)], plugins=[collector])
    report = {"test": TEST, "started": started, "exit_code": int(code), **collector.figures}
    report["goals"] = goals(collector.figures)
    for name, figure, held in report["goals"]:
        print(f"{name}: {figure}: {'held' if held else 'NOT held'}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if all(held for _, _, held in report["goals"]) else 1


if __name__ == "__main__":
    sys.exit(main())
