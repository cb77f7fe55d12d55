"""Worker slots in a real deployment: ten 10-second predictions on two slots, three ways.

Starts the end-to-end tier's deployment (tests/e2e/harness.py: PostgreSQL, api-server,
scheduler, dag-processor, triggerer; LocalExecutor with ``parallelism=2``) against an emulator,
then runs the DAGs of benchmarks/dags/bench_deployment.py one after another and reports each
run's wall time (its start to its end, from the REST API):

- ``bench_deferrable``: the operator deferring to the triggerer;
- ``bench_blocking``: the operator polling on the worker (``deferrable=False``);
- ``bench_reschedule``: create without waiting, then a ``PredictionSensor`` in reschedule mode;
- ``bench_prefer_wait`` against ``bench_deferred_short``: a 1-second prediction with the
  ``Prefer: wait`` fast path (``prefer_wait``) or with deferral; the task's own wall time.

Needs PostgreSQL on 127.0.0.1:5432 (user postgres), as ``make e2e`` does.

    .venv/bin/python benchmarks/deployment_slots.py --json bench-output/deployment.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SLOT_DAGS = ("bench_deferrable", "bench_blocking", "bench_reschedule")
WAIT_DAGS = ("bench_prefer_wait", "bench_deferred_short")
PREDICTIONS, SECONDS, SLOTS = 10, 10.0, 2


def _seconds(start: str | None, end: str | None) -> float:
    if not start or not end:
        return float("nan")
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def run_dag(stack: Any, dag_id: str) -> dict[str, Any]:
    run_id = stack.trigger(dag_id)
    state = stack.wait_for_run(dag_id, run_id, timeout=900)
    run = stack.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")
    tis = stack.task_instances(dag_id, run_id)
    return {
        "dag_id": dag_id,
        "state": state,
        "wall_s": _seconds(run.get("start_date"), run.get("end_date")),
        "task_wall_s": max(_seconds(ti.get("start_date"), ti.get("end_date")) for ti in tis),
        "tasks": len(tis),
        "max_try": max(int(ti.get("try_number") or 0) for ti in tis),
        "failed_tasks": sum(1 for ti in tis if ti.get("state") != "success"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--dags", nargs="+", default=[*SLOT_DAGS, *WAIT_DAGS], help="which DAGs (default: all)")
    args = p.parse_args(argv)

    from airflow_provider_cometapi.emulator.testing import EmulatorProcess
    from tests.e2e.harness import AirflowStack

    results: list[dict[str, Any]] = []
    report: dict[str, Any] = {
        "predictions": PREDICTIONS,
        "prediction_seconds": SECONDS,
        "slots": SLOTS,
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "results": results,
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-deployment-") as tmp,
        EmulatorProcess(api_key="bench-deployment-key", duration=SECONDS) as emulator,
    ):
        env = {**emulator.airflow_env(), "AIRFLOW__CORE__PARALLELISM": str(SLOTS)}
        started = time.monotonic()
        with AirflowStack(Path(tmp) / "airflow", [REPO / "benchmarks" / "dags"], env=env) as stack:
            print(f"deployment up in {time.monotonic() - started:.0f} s", flush=True)
            for dag_id in args.dags:
                result = run_dag(stack, dag_id)
                results.append(result)
                print(
                    f"{dag_id}: {result['state']} in {result['wall_s']:.1f} s (longest task "
                    f"{result['task_wall_s']:.1f} s, tries up to {result['max_try']})",
                    flush=True,
                )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    failed = [r["dag_id"] for r in results if r["state"] != "success"]
    if failed:
        print(f"failed runs: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
