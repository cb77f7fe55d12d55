"""Batch vs mapped in a real deployment: N prompts of 5 s, each design storing every output.

Starts the end-to-end tier's deployment (tests/e2e/harness.py: PostgreSQL, api-server,
scheduler, dag-processor, triggerer; LocalExecutor with ``parallelism=2``, two worker slots)
against an emulator whose predictions take ``--seconds`` (5), then runs the DAGs of
benchmarks/dags/bench_batch_vs_mapped.py one after the other, the same N prompts each:

- ``bench_batch``: one ``CreatePredictionBatchOperator`` (deferrable, a ``file://`` destination);
- ``bench_mapped``: a deferrable ``@task.cometapi`` mapped over the prompts, then
  ``SavePredictionOutputsOperator`` mapped over its predictions.

For each run it reports:

- **wall time**, the run's start to its end (the dag run's dates);
- **task instances** and task executions (those started, plus a resume per deferral and a try
  per retry: ``_shared.executions_done``);
- **worker-slot seconds**: the LocalExecutor workers busy with a task, summed over time, sampled
  every 0.1 s from their process titles (a worker names the task instance it runs, ``<idle>``
  otherwise; a deferred task holds none); and, from the metadata DB every second, the run's task
  instances per state summed over time (``running``: the task process up and reporting);
- **metadata-DB rows written**: ``n_tup_ins + n_tup_upd`` of ``pg_stat_user_tables`` across the
  run (read again after PostgreSQL's statistics have settled), per table, and in the tables a run
  writes (``_shared.BACKGROUND_TABLES``, the heartbeats and the dag-processor's parses, apart);
- that every output was stored (images and sidecars in the destination, each image decoded,
  no ``.partial`` left) and the emulator's creates equal N;

and the ratio batch wall / mapped wall against the goal <= 0.25x. A run that does not end in
``--timeout`` is reported with how far it got.

Needs PostgreSQL on 127.0.0.1:5432 (user postgres), as ``make e2e`` does.

    .venv/bin/python benchmarks/batch_vs_mapped.py --n 1000 --json bench-output/batch_vs_mapped.json
    .venv/bin/python benchmarks/batch_vs_mapped.py --n 5 --designs batch mapped   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2
from _shared import executions_done, ratio, run_rows_written, stored_outputs  # beside this script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.harness import AirflowStack, psql_query  # noqa: E402  (the repo root is on the path now)

DAGS = {"batch": "bench_batch", "mapped": "bench_mapped"}
SLOTS = 2
GOAL = 0.25
SAMPLE_SECONDS = 0.1  # the workers' titles (cheap: two reads under /proc)
DB_SAMPLE_SECONDS = 1.0  # the run's task instances per state
REPORT_SECONDS = 60.0  # how often a long run prints them
SCHEDULER = "scheduler-1"  # AirflowStack's name for it; its children are the LocalExecutor workers
WORKER_TITLE = "airflow worker -- LocalExecutor: "
# PostgreSQL flushes a busy backend's statistics at most once a second and an idle one's after
# 10 s (PGSTAT_IDLE_INTERVAL): the counters are read again after this long.
STATS_SETTLE_SECONDS = 11.0


# --- The metadata DB --------------------------------------------------------------------------


def of_run(dag_id: str, run_id: str) -> str:
    """The SQL condition for one run's rows (ids made by Airflow: letters, digits, ``_-:.+``)."""
    return f"dag_id = '{dag_id}' AND run_id = '{run_id}'"


def table_writes(database: str) -> dict[str, dict[str, int]]:
    """Rows inserted, updated and deleted so far, per table of the database."""
    rows = psql_query("SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables", database)
    writes = {}
    for row in rows:
        name, ins, upd, dele = row.split("|")
        writes[name] = {"ins": int(ins), "upd": int(upd), "del": int(dele)}
    return writes


def writes_between(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Rows written (inserted + updated) between two readings: per table, in all, and less the background."""
    per_table: dict[str, dict[str, int]] = {}
    for name, now in after.items():
        was = before.get(name, {"ins": 0, "upd": 0, "del": 0})
        delta = {key: now[key] - was[key] for key in now}
        if any(delta.values()):
            per_table[name] = delta
    written = {name: d["ins"] + d["upd"] for name, d in per_table.items()}
    return {
        "rows_written": sum(written.values()),
        "run_rows_written": run_rows_written(per_table),
        "rows_deleted": sum(d["del"] for d in per_table.values()),
        "per_table": dict(sorted(per_table.items(), key=lambda item: -(item[1]["ins"] + item[1]["upd"]))),
    }


def busy_slots(scheduler_pid: int) -> list[str]:
    """What each LocalExecutor worker (a child of the scheduler) runs: a task instance id, or nothing."""
    try:
        children = Path(f"/proc/{scheduler_pid}/task/{scheduler_pid}/children").read_text().split()
    except OSError:
        return []
    busy = []
    for pid in children:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if title.startswith(WORKER_TITLE) and not title.endswith("<idle>"):
            busy.append(title.removeprefix(WORKER_TITLE))
    return busy


class RunSampler(threading.Thread):
    """
    Watches one run: every ``SAMPLE_SECONDS`` the LocalExecutor workers' titles (a worker names the
    task instance it runs; a busy worker is a taken slot) and, every ``DB_SAMPLE_SECONDS``, the
    run's state and its task instances per state, from one connection to the metadata DB.
    """

    def __init__(self, database: str, dag_id: str, run_id: str, scheduler_pid: int) -> None:
        super().__init__(daemon=True)
        self.connection = psycopg2.connect(host="127.0.0.1", user="postgres", dbname=database)
        self.connection.autocommit = True
        self.where, self.dag_id, self.scheduler_pid = of_run(dag_id, run_id), dag_id, scheduler_pid
        self.slot_seconds = 0.0
        self.executions: set[str] = set()
        self.state_seconds: dict[str, float] = {}
        self.peaks: dict[str, int] = {}
        self.run_state: tuple[str, str, str] = ("queued", "", "")
        self._done = threading.Event()

    def run(self) -> None:
        last = last_db = time.monotonic()
        next_report = last + REPORT_SECONDS
        with self.connection.cursor() as cursor:
            while not self._done.wait(SAMPLE_SECONDS):
                now = time.monotonic()
                busy = busy_slots(self.scheduler_pid)
                self.slot_seconds += len(busy) * (now - last)
                self.executions.update(busy)
                last = now
                if now - last_db < DB_SAMPLE_SECONDS:
                    continue
                cursor.execute(f"SELECT state, count(*) FROM task_instance WHERE {self.where} GROUP BY state")
                counts = {str(state or "none"): int(count) for state, count in cursor.fetchall()}
                for state, count in counts.items():
                    self.state_seconds[state] = self.state_seconds.get(state, 0.0) + count * (now - last_db)
                    self.peaks[state] = max(self.peaks.get(state, 0), count)
                cursor.execute(f"SELECT state, start_date, end_date FROM dag_run WHERE {self.where}")
                state, start, end = cursor.fetchone()
                self.run_state, last_db = (str(state), str(start or ""), str(end or "")), now
                if now >= next_report:
                    next_report = now + REPORT_SECONDS
                    print(f"  {self.dag_id}: {dict(sorted(counts.items()))}", flush=True)

    def wait_for_end(self, timeout: float) -> tuple[str, str, str]:
        """The run's end state, start and end (from the DB: a loaded api-server may not answer in time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run_state[0] in ("success", "failed"):
                return self.run_state
            time.sleep(1)
        return "timeout", "", ""

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=30)
        self.connection.close()


# --- One run ----------------------------------------------------------------------------------


def _seconds(start: str | None, end: str | None) -> float:
    if not start or not end:
        return float("nan")
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def run_design(
    stack: AirflowStack, emulator: Any, design: str, n: int, destination: Path, timeout: float
) -> dict[str, Any]:
    dag_id, database = DAGS[design], str(stack.database)
    stack.wait_for_dag(dag_id)
    emulator.reset()
    before = table_writes(database)
    run_id = stack.trigger(dag_id, conf={"n": n, "destination": destination.as_uri()})
    sampler = RunSampler(database, dag_id, run_id, stack.processes[SCHEDULER].pid)
    sampler.start()
    started = time.monotonic()
    try:
        state, start_date, end_date = sampler.wait_for_end(timeout)
    finally:
        sampler.stop()
    elapsed = time.monotonic() - started
    tis = [
        row.split("|")
        for row in psql_query(
            f"SELECT task_id, state, try_number FROM task_instance WHERE {of_run(dag_id, run_id)}",
            database,
        )
    ]
    time.sleep(STATS_SETTLE_SECONDS)
    writes = writes_between(before, table_writes(database))
    deferrals = writes["per_table"].get("trigger", {}).get("ins", 0)
    retries = sum(max(0, int(try_number or 0) - 1) for _, _, try_number in tis)
    stats = emulator.stats(detail=False)
    slot_s = sampler.slot_seconds
    wall = _seconds(start_date, end_date) if state != "timeout" else elapsed
    result = {
        "design": design,
        "dag_id": dag_id,
        "state": state,
        "wall_s": wall,
        "task_instances": len(tis),
        "task_instances_by_task": {
            task: sum(1 for t, _, _ in tis if t == task) for task in sorted({t for t, _, _ in tis})
        },
        "failed_task_instances": sum(1 for _, s, _ in tis if s != "success"),
        "states": {s: sum(1 for _, x, _ in tis if x == s) for s in sorted({x for _, x, _ in tis})},
        "deferrals": deferrals,
        "retries": retries,
        "executions_seen_on_workers": len(sampler.executions),
        "worker_slot_s": slot_s,
        "running_s": sampler.state_seconds.get("running", 0.0),
        "deferred_ti_s": sampler.state_seconds.get("deferred", 0.0),
        "slot_use": ratio(slot_s, SLOTS * wall),
        "peaks": sampler.peaks,
        **writes,
        "creates": int(stats["creates"]),
        "polls": int(stats["polls"]),
        "stored": stored_outputs(destination),
    }
    result["executions_done"] = executions_done(result)
    return result


def _whole(result: dict[str, Any], n: int) -> bool:
    """One create and one whole stored image per prompt, nothing left half-written."""
    stored = result["stored"]
    return bool(
        result["creates"] == n and stored["images"] == n and not stored["broken_images"] and not stored["partials"]
    )


def verdict(results: dict[str, dict[str, Any]], n: int) -> dict[str, Any]:
    """The ratio and whether the goal held; ``complete`` says both runs stored every output once."""
    batch, mapped = results.get("batch"), results.get("mapped")
    complete = all(r["state"] == "success" and _whole(r, n) for r in (batch, mapped) if r)
    if not batch or not mapped:
        return {"ratio": float("nan"), "goal": GOAL, "held": None, "complete": complete}
    value = ratio(batch["wall_s"], mapped["wall_s"])
    # A mapped run cut short by the timeout took at least that long: the ratio is an upper bound.
    held = value <= GOAL if batch["state"] == "success" else False
    return {
        "ratio": value,
        "goal": GOAL,
        "held": held,
        "complete": complete,
        "mapped_cut_short": mapped["state"] == "timeout",
    }


def summary(result: dict[str, Any]) -> str:
    stored = result["stored"]
    return (
        f"{result['design']}: {result['state']} in {result['wall_s']:.1f} s, {result['task_instances']} task instances "
        f"({result['executions_done']} executions, {result['deferrals']} deferrals), "
        f"worker-slot {result['worker_slot_s']:.0f} s "
        f"(running {result['running_s']:.0f} s), {result['rows_written']:,} DB rows written "
        f"({result['run_rows_written']:,} in the run's tables), {result['creates']} creates, "
        f"{stored['images']} images ({stored['broken_images']} broken, {stored['partials']} partial)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=1000, help="prompts per design (default 1,000)")
    p.add_argument("--seconds", type=float, default=5.0, help="each prediction's seconds (default 5)")
    p.add_argument("--image-size", type=int, default=128, help="the emulator's image size (default 128 px)")
    p.add_argument("--designs", nargs="+", choices=list(DAGS), default=list(DAGS), help="in this order")
    p.add_argument("--timeout", type=float, default=7200.0, help="give up on a run after (default 7,200 s)")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    # A stop by SIGTERM unwinds like an exception, so the deployment and its database go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from airflow_provider_cometapi.emulator.testing import EmulatorProcess

    results: dict[str, dict[str, Any]] = {}
    report: dict[str, Any] = {
        "n": args.n,
        "prediction_seconds": args.seconds,
        "image_size": args.image_size,
        "slots": SLOTS,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "results": results,
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-batch-vs-mapped-") as tmp,
        EmulatorProcess(
            api_key="bench-batch-vs-mapped-key",
            duration=args.seconds,
            extra_args=("--image-size", str(args.image_size)),
        ) as emulator,
    ):
        env = {
            **emulator.airflow_env(),
            "AIRFLOW__CORE__PARALLELISM": str(SLOTS),
            # The mapped design maps over an XCom list of N prompts: at most max_map_length.
            "AIRFLOW__CORE__MAX_MAP_LENGTH": str(max(1024, args.n)),
            # apache/airflow#72716: a deferral's late exit must be drained before its resume runs.
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            # A loaded api-server can take longer than the default 5 s to answer a task's start.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
        }
        up = time.monotonic()
        home = Path(tmp) / "airflow"
        with AirflowStack(home, [REPO / "benchmarks" / "dags"], env=env) as stack:
            report["deployment_up_s"] = time.monotonic() - up
            print(f"deployment up in {report['deployment_up_s']:.0f} s", flush=True)
            for design in args.designs:
                results[design] = run_design(stack, emulator, design, args.n, home / "images" / design, args.timeout)
                print(summary(results[design]), flush=True)
                if args.json:  # written after each run: a long one cut short keeps the others
                    _write(args.json, report | verdict(results, args.n))
    report |= verdict(results, args.n)
    if "batch" in results and "mapped" in results:
        held = "held" if report["held"] else "NOT held"
        print(f"batch wall / mapped wall = {report['ratio']:.3f} (goal <= {GOAL}): {held}")
    if args.json:
        _write(args.json, report)
    # A run cut short by --timeout is a figure (reported as such); a failed run or a lost output is not.
    wrong = [
        r["design"]
        for r in results.values()
        if r["state"] == "failed" or (r["state"] == "success" and not _whole(r, args.n))
    ]
    if wrong:
        print(f"runs that failed or lost outputs: {wrong}", file=sys.stderr)
    return 1 if wrong else 0


def _write(path: str, report: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
