"""Ten thousand inputs in one task: one CreatePredictionBatchOperator against a throttling emulator.

The emulator runs with a per-key create limit (``--create-limit``, default 6,000 a minute: 429
with ``Retry-After`` past it), short predictions (``--min-duration``..``--max-duration``, 2-5 s
by default) and small images (64 px), so storage is cheap. One child process, measured on its
own, runs ONE ``CreatePredictionBatchOperator`` as a task runs it, with a ``file://``
destination in a temporary folder:

- ``--mode blocking`` (default): ``execute()`` with ``deferrable=False``; the batch's async
  watch runs on the worker (``asyncio.run``);
- ``--mode deferrable``: ``execute()``, then for each deferral the ``PredictionBatchTrigger``
  rebuilt from its serialized kwargs and run to its event in the same process, then
  ``execute_complete()`` on a fresh operator (as a resumed task): no scheduler in between, so
  the resumes cost less than in a deployment.

The parent samples the emulator's counters four times a second and reports, for the same run:

- the **sustained create rate** (creates over the span from the first to the last create) as a
  fraction of the limit (goal >= 90 %), with the rate between 10 % and 90 % of the creates and a
  10-second timeline;
- **duplicates**: emulator creates minus inputs (goal 0), and prompts created more than once;
- **lost inputs**: manifest lines missing or not terminal, succeeded lines without their stored
  files, predictions the emulator has that the manifest does not name (goal 0);
- the worker's **peak RSS** (the child's own ``ru_maxrss``, Airflow imports included; goal
  <= 300 MB), wall time, CPU, and where the time went (the worker loop, its sleeps between
  creates and while idle, the creates' HTTP, storing in the pool (summed over its threads),
  manifest checkpoints, the policy check), measured by timing wrappers around the batch's own
  methods.

``--trigger-n N`` (default 1,000, the most ``max_in_flight`` allows) also measures the batch
trigger's CPU per poll on its own, against ``trigger_scale.py``'s lean floor: N predictions on
``lean_server.py``, watched to their end by one ``PredictionBatchTrigger`` (built from its
kwargs, ``run()`` to its event, ``cleanup()``, the event as JSON) in one child, and by the floor
(``trigger_scale.watch_floor``) in another, each measured on its own (goal: trigger <= 1.2x).

    .venv/bin/python benchmarks/batch_scale.py --json bench-output/batch_scale.json
    .venv/bin/python benchmarks/batch_scale.py --n 50 --create-limit 60000 --trigger-n 20   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from _shared import pin, ratio  # beside this script

REPO = Path(__file__).resolve().parents[1]
API_KEY = "bench-key"
MODEL = "black-forest-labs/flux-schnell"
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
GOALS = {"rate_fraction": 0.90, "duplicates": 0, "lost": 0, "peak_rss_mb": 300.0, "trigger_vs_floor": 1.2}
SAMPLE_SECONDS = 0.25


# --- Measuring inside a child -------------------------------------------------------------------


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _server_stats(base_url: str, path: str) -> dict[str, Any]:
    request = urllib.request.Request(base_url + path, headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        result: dict[str, Any] = json.loads(answer.read())
        return result


class Phases:
    """Seconds spent in the batch's own methods (timing wrappers; nested ones overlap, pool threads add up)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu_seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _add(self, key: str, seconds: float, cpu_seconds: float) -> None:
        with self._lock:
            self.seconds[key] += seconds
            self.cpu_seconds[key] += cpu_seconds
            self.calls[key] += 1

    def wrap(self, owner: Any, name: str, key: str) -> None:
        original = getattr(owner, name)
        phases = self

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started, cpu_started = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                phases._add(key, time.perf_counter() - started, time.thread_time() - cpu_started)

        setattr(owner, name, timed)


def batch_inputs(n: int, low: float, high: float, seed: int = 17) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "prompt": f"bench {i}",
            "seed": i,
            "_emulator": {"duration": round(rng.uniform(low, high), 3), "starting_for": 0.5},
        }
        for i in range(n)
    ]


class _TI:
    run_id = "manual__bench"
    map_index = -1
    dag_id = "batch_scale"
    try_number = 1
    max_tries = 0

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def worker_child(args: argparse.Namespace) -> int:
    """One batch task, as a worker runs it; writes its figures to ``--result``."""
    from airflow.providers.common.compat.sdk import TaskDeferred

    from airflow_provider_cometapi.batch import poller, run
    from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
    from airflow_provider_cometapi.operators.batch import CreatePredictionBatchOperator

    phases = Phases()
    phases.wrap(run.BatchRun, "create_and_store", "worker_loop")
    phases.wrap(run.BatchRun, "_await_news", "loop_waits")
    phases.wrap(run.BatchRun, "_settle", "store_in_pool")
    phases.wrap(poller.BackgroundPoller, "_main", "poller_thread")
    phases.wrap(run.BatchRun, "checkpoint", "checkpoint")
    phases.wrap(run.BatchRun, "policy_exceeded", "policy_check")
    phases.wrap(CometAPIHook, "create_prediction", "create_http")
    phases.wrap(CreatePredictionBatchOperator, "_open", "open_manifest")

    inputs = batch_inputs(args.n, args.min_duration, args.max_duration)
    deferrable = args.mode == "deferrable"

    def make() -> CreatePredictionBatchOperator:
        return CreatePredictionBatchOperator(
            task_id="batch",
            model=MODEL,
            inputs=inputs,
            destination=Path(args.destination).as_uri(),
            max_in_flight=args.max_in_flight,
            creates_per_minute=args.creates_per_minute,
            poll_interval=args.poll_interval,
            deferrable=deferrable,
            timeout=args.timeout,
        )

    def context() -> Any:
        return {"ti": _TI(), "outlet_events": {}}

    profiler: Any = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    rss_before = _rss_mib()
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    trigger = {"runs": 0, "cpu_s": 0.0, "wall_s": 0.0, "polls": 0, "kwargs_bytes_max": 0}
    try:
        result = make().execute(context())
    except TaskDeferred as deferred:
        pending: TaskDeferred | None = deferred
        result = None
        while pending is not None:
            classpath, kwargs = pending.trigger.serialize()
            trigger["kwargs_bytes_max"] = max(trigger["kwargs_bytes_max"], len(json.dumps(kwargs)))
            polls_before = _server_stats(args.base_url, "/_emulator/stats?detail=0")["polls"]
            cpu0, wall0 = _cpu_seconds(), time.perf_counter()
            event = asyncio.run(_first_event(classpath, kwargs))
            trigger["cpu_s"] += _cpu_seconds() - cpu0
            trigger["wall_s"] += time.perf_counter() - wall0
            trigger["polls"] += _server_stats(args.base_url, "/_emulator/stats?detail=0")["polls"] - polls_before
            trigger["runs"] += 1
            try:
                result = make().execute_complete(context(), event=event, **(pending.kwargs or {}))
                pending = None
            except TaskDeferred as again:
                pending = again
    wall = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu_before
    if profiler is not None:
        import pstats

        profiler.disable()
        with open(args.profile, "w") as out:
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(35)
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(45)
    figures = {
        "mode": args.mode,
        "result": result,
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_before_mib": rss_before,
        "peak_rss_mib": max(_peak_rss_mib(), _rss_mib()),
        "phases_s": dict(phases.seconds),
        "phases_cpu_s": dict(phases.cpu_seconds),
        "phase_calls": dict(phases.calls),
        "trigger_in_process": trigger if deferrable else None,
    }
    Path(args.result).write_text(json.dumps(figures))
    return 0


async def _first_event(classpath: str, kwargs: dict[str, Any]) -> Any:
    """As the triggerer: the trigger built from its classpath and kwargs, run() to its event, cleanup()."""
    import importlib

    module_name, class_name = classpath.rsplit(".", 1)
    trigger = getattr(importlib.import_module(module_name), class_name)(**kwargs)
    try:
        async for event in trigger.run():
            json.dumps(event.payload)
            return event.payload
    finally:
        await trigger.cleanup()
    raise RuntimeError("the trigger ended without an event")


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --- The batch trigger on its own, against the lean floor ---------------------------------------


def trigger_child(args: argparse.Namespace) -> int:
    """``--child batch-trigger`` or ``--child floor``: watch the ids on stdin's file to their end."""
    import trigger_scale  # beside this script: its floor, exactly as it measures it

    trigger_scale._import_watcher("floor")  # what the trigger imports too
    import airflow_provider_cometapi.triggers.batch  # noqa: F401

    print("ready", flush=True)
    os.dup2(2, 1)
    ids = json.loads(Path(sys.stdin.readline().strip()).read_text())
    seen = trigger_scale.Seen()
    rss_before = _rss_mib()
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    if args.child == "floor":
        asyncio.run(trigger_scale.watch_floor(ids, args, seen))
        ended = len(seen.at)
    else:
        from airflow_provider_cometapi.triggers.batch import PredictionBatchTrigger

        classpath, kwargs = PredictionBatchTrigger(
            prediction_ids=ids,
            poll_interval=args.poll_interval,
            deadline=time.time() + args.watch_timeout,
            resume_after=len(ids),  # to the end, as the floor
        ).serialize()
        event = asyncio.run(_first_event(classpath, kwargs))
        ended = sum(1 for status in event["finished"].values() if status == "succeeded")
    wall = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu_before
    Path(args.result).write_text(
        json.dumps(
            {
                "watcher": args.child,
                "n": len(ids),
                "wall_s": wall,
                "cpu_s": cpu,
                "rss_before_mib": rss_before,
                "peak_rss_mib": max(_peak_rss_mib(), _rss_mib()),
                "errors": len(ids) - ended,
            }
        )
    )
    return 0


def run_trigger_child(server: Any, watcher: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import trigger_scale

    server.reset()
    result_file, ids_file = workdir / f"trigger-{watcher}.json", workdir / f"ids-{watcher}.json"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        *("--child", watcher, "--result", str(result_file), "--base-url", server.base_url),
        *("--poll-interval", str(args.trigger_poll_interval), "--watch-timeout", "300"),
    ]
    env = {**os.environ, **server.airflow_env(), "PYTHONPATH": f"{REPO}:{REPO / 'benchmarks'}"}
    with (workdir / f"trigger-{watcher}.log").open("w") as log:
        child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        try:
            pin(child.pid, args.client_cpu)
            assert child.stdout is not None
            assert child.stdin is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{watcher} child did not start: {(workdir / f'trigger-{watcher}.log').read_text()}")
            ids = asyncio.run(trigger_scale._create(server.base_url, args.trigger_n, args.trigger_duration))
            ids_file.write_text(json.dumps(ids))
            child.stdin.write(f"{ids_file}\n")
            child.stdin.flush()
            code = child.wait(400)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    if code != 0:
        raise RuntimeError(f"{watcher} child exited {code}: {(workdir / f'trigger-{watcher}.log').read_text()[-3000:]}")
    result: dict[str, Any] = json.loads(result_file.read_text())
    polls = server.stats()["polls"]
    result.update(
        polls=polls,
        polls_per_prediction=polls / args.trigger_n,
        cpu_ms_per_poll=1000 * result["cpu_s"] / polls if polls else math.nan,
        polls_per_cpu_s=polls / result["cpu_s"] if result["cpu_s"] else math.nan,
    )
    return result


def measure_trigger(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from lean_server import LeanServerProcess  # beside this script

    runs: list[dict[str, Any]] = []
    with LeanServerProcess(api_key=API_KEY, duration=args.trigger_duration, starting_for=0.5) as server:
        assert server.pid is not None
        pin(server.pid, args.server_cpu)
        for _ in range(args.trigger_repeat):
            for watcher in ("floor", "batch-trigger"):
                runs.append(run_trigger_child(server, watcher, args, workdir))
                r = runs[-1]
                print(
                    f"  {watcher} N={r['n']}: {r['cpu_ms_per_poll']:.3f} CPU ms/poll "
                    f"({r['polls_per_cpu_s']:,.0f} polls/CPU s), {r['polls_per_prediction']:.2f} polls/prediction, "
                    f"{r['errors']} errors",
                    flush=True,
                )
    pairs = [ratio(runs[i + 1]["cpu_ms_per_poll"], runs[i]["cpu_ms_per_poll"]) for i in range(0, len(runs) - 1, 2)]
    return {
        "n": args.trigger_n,
        "duration_s": args.trigger_duration,
        "poll_interval_s": args.trigger_poll_interval,
        "runs": runs,
        "ratios": pairs,
        "ratio_mean": sum(pairs) / len(pairs) if pairs else math.nan,
    }


# --- The parent: emulator, the batch child, the counts ------------------------------------------


class Sampler(threading.Thread):
    """The emulator's counters, ``SAMPLE_SECONDS`` apart: when the creates happened."""

    def __init__(self, emulator: Any) -> None:
        super().__init__(daemon=True)
        self.emulator = emulator
        self.samples: list[tuple[float, int, int, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                s = self.emulator.stats(detail=False)
                self.samples.append((time.monotonic(), s["creates"], s["throttled_creates"], s["polls"]))
            except OSError:
                pass
            self.stop.wait(SAMPLE_SECONDS)


def _crossing(samples: list[tuple[float, int, int, int]], count: float) -> float:
    """When the creates reached ``count`` (interpolated between samples)."""
    previous = samples[0]
    for sample in samples:
        if sample[1] >= count:
            if sample[1] == previous[1]:
                return sample[0]
            return previous[0] + (sample[0] - previous[0]) * (count - previous[1]) / (sample[1] - previous[1])
        previous = sample
    return samples[-1][0]


def create_rates(samples: list[tuple[float, int, int, int]], limit_per_s: float) -> dict[str, Any]:
    if not samples or samples[-1][1] == 0:
        return {"creates": 0, "rate_per_s": math.nan, "fraction": math.nan}
    total = samples[-1][1]
    # First create: between the last sample at 0 and the first above; last: the first sample at total.
    first = max(s[0] for s in samples if s[1] == 0) if samples[0][1] == 0 else samples[0][0]
    last = min(s[0] for s in samples if s[1] == total)
    span = max(last - first, SAMPLE_SECONDS)
    t10, t90 = _crossing(samples, 0.1 * total), _crossing(samples, 0.9 * total)
    middle = 0.8 * total / (t90 - t10) if t90 > t10 else math.nan
    timeline = []
    start = first
    while start < last:
        inside = [s for s in samples if start <= s[0] <= start + 10]
        if len(inside) >= 2:
            timeline.append(round((inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]), 1))
        start += 10
    return {
        "creates": total,
        "span_s": span,
        "rate_per_s": total / span,
        "fraction": total / span / limit_per_s,
        "middle_rate_per_s": middle,
        "middle_fraction": middle / limit_per_s,
        "timeline_per_10s": timeline,
        "throttled": samples[-1][2],
    }


def check_manifest(result: dict[str, Any] | None, n: int, emulator_ids: dict[str, Any]) -> dict[str, Any]:
    """Lost inputs: missing or not terminal, stored files missing; ids the manifest does not name."""
    if not result:
        return {"lines": 0, "lost": n, "not_terminal": n, "missing_files": 0, "orphans": len(emulator_ids)}
    path = Path(result["manifest"].removeprefix("file://"))
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_index = {line["index"]: line for line in lines}
    missing = [i for i in range(n) if i not in by_index]
    not_terminal = [line["index"] for line in lines if line["status"] not in TERMINAL]
    missing_files = 0
    for line in lines:
        if line["status"] == "succeeded":
            stored = line.get("stored") or []
            missing_files += not stored or any(not Path(uri.removeprefix("file://")).is_file() for uri in stored)
    named = {pid for line in lines for pid in (line["prediction_id"], *line.get("previous_ids", ())) if pid}
    statuses = Counter(line["status"] for line in lines)
    return {
        "lines": len(lines),
        "missing": len(missing),
        "not_terminal": len(not_terminal),
        "missing_files": missing_files,
        "orphans": len(set(emulator_ids) - named),
        "lost": len(missing) + len(not_terminal) + missing_files,
        "statuses": dict(statuses),
        "manifest_bytes": path.stat().st_size,
    }


def run_batch(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from airflow_provider_cometapi.emulator.testing import EmulatorProcess

    destination = workdir / f"out-{args.mode}"
    destination.mkdir()
    result_file = workdir / f"batch-{args.mode}.json"
    log_file = workdir / f"batch-{args.mode}.log"
    extra = ["--image-size", str(args.image_size)]
    with EmulatorProcess(api_key=API_KEY, duration=3.0, create_limit=args.create_limit, extra_args=extra) as emulator:
        assert emulator.pid is not None
        pin(emulator.pid, args.server_cpu)
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            *("--child", "worker", "--mode", args.mode, "--result", str(result_file)),
            *("--base-url", emulator.base_url, "--destination", str(destination), "--n", str(args.n)),
            *("--max-in-flight", str(args.max_in_flight), "--creates-per-minute", str(args.creates_per_minute)),
            *("--poll-interval", str(args.poll_interval), "--timeout", str(args.timeout)),
            *("--min-duration", str(args.min_duration), "--max-duration", str(args.max_duration)),
        ]
        if args.profile:
            command += ["--profile", str(Path(args.profile) / f"profile-batch-{args.mode}.txt")]
        airflow_home = workdir / "airflow-home"
        airflow_home.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "AIRFLOW_CONN_COMETAPI_DEFAULT": emulator.connection_json(),
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PYTHONPATH": f"{REPO}:{REPO / 'benchmarks'}",
        }
        sampler = Sampler(emulator)
        sampler.start()
        with log_file.open("w") as log:
            child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            pin(child.pid, args.client_cpu)
            try:
                code = child.wait(args.timeout + 120)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
                code = -9
        sampler.stop.set()
        sampler.join()
        stats = emulator.stats(detail=True)
    log_tail = log_file.read_text()[-4000:]
    if code != 0 or not result_file.exists():
        raise RuntimeError(f"the batch child exited {code}; its log ends:\n{log_tail}")
    figures: dict[str, Any] = json.loads(result_file.read_text())
    predictions = stats.get("predictions", {})
    prompts = Counter(p["prompt"] for p in predictions.values())
    figures.update(
        n=args.n,
        create_limit_per_minute=args.create_limit,
        creates_per_minute=args.creates_per_minute,
        max_in_flight=args.max_in_flight,
        poll_interval_s=args.poll_interval,
        durations_s=[args.min_duration, args.max_duration],
        emulator_creates=stats["creates"],
        emulator_polls=stats["polls"],
        emulator_downloads=stats["file_downloads"],
        duplicates=stats["creates"] - args.n,
        prompts_created_twice=sum(1 for count in prompts.values() if count > 1),
        rates=create_rates(sampler.samples, args.create_limit / 60.0),
        manifest=check_manifest(figures.get("result"), args.n, predictions),
        progress_lines=sum(1 for line in log_tail.splitlines() if " in flight" in line),
    )
    return figures


def verdicts(batch: dict[str, Any] | None, trigger: dict[str, Any] | None) -> list[tuple[str, str, str, bool | None]]:
    """(goal, figure, target, held) per goal."""
    out: list[tuple[str, str, str, bool | None]] = []
    if batch is not None:
        fraction = batch["rates"]["fraction"]
        lost = batch["manifest"]["lost"] + batch["manifest"]["orphans"]
        out += [
            (
                "sustained create rate",
                f"{batch['rates']['rate_per_s']:.1f}/s = {fraction:.1%} of {batch['create_limit_per_minute'] / 60:g}/s",
                ">= 90 %",
                fraction >= GOALS["rate_fraction"],
            ),
            ("duplicates", f"{batch['duplicates']}", "0", batch["duplicates"] == GOALS["duplicates"]),
            ("lost inputs", f"{lost}", "0", lost == GOALS["lost"]),
            (
                "worker peak RSS",
                f"{batch['peak_rss_mib'] * 1.048576:.0f} MB ({batch['peak_rss_mib']:.0f} MiB)",
                "<= 300 MB",
                batch["peak_rss_mib"] * 1.048576 <= GOALS["peak_rss_mb"],
            ),
        ]
    if trigger is not None:
        mean = trigger["ratio_mean"]
        out.append(
            (
                "triggerer CPU per poll vs lean floor",
                ", ".join(f"{r:.2f}x" for r in trigger["ratios"]) + f" (mean {mean:.2f}x)",
                "<= 1.2x",
                None if math.isnan(mean) else mean <= GOALS["trigger_vs_floor"],
            )
        )
    return out


def print_report(report: dict[str, Any]) -> None:
    batch, trigger = report.get("batch"), report.get("trigger")
    if batch is not None:
        r, m = batch["rates"], batch["manifest"]
        print()
        print(
            f"batch ({batch['mode']}): {batch['n']:,} inputs, limit {batch['create_limit_per_minute']:,.0f}/min, "
            f"creates_per_minute={batch['creates_per_minute']:,.0f}, max_in_flight={batch['max_in_flight']}, "
            f"poll every {batch['poll_interval_s']:g} s, predictions {batch['durations_s'][0]:g}-"
            f"{batch['durations_s'][1]:g} s"
        )
        print(f"  wall {batch['wall_s']:.1f} s, CPU {batch['cpu_s']:.1f} s, peak RSS {batch['peak_rss_mib']:.0f} MiB")
        print(
            f"  creates {r['creates']:,} in {r.get('span_s', math.nan):.1f} s: {r['rate_per_s']:.1f}/s "
            f"({r['fraction']:.1%} of the limit); 10-90 %: {r.get('middle_rate_per_s', math.nan):.1f}/s "
            f"({r.get('middle_fraction', math.nan):.1%}); 429s: {r.get('throttled', 0)}"
        )
        print(f"  creates/s per 10 s: {r.get('timeline_per_10s')}")
        print(
            f"  emulator creates {batch['emulator_creates']:,} (duplicates {batch['duplicates']}, prompts twice "
            f"{batch['prompts_created_twice']}), polls {batch['emulator_polls']:,}, downloads "
            f"{batch['emulator_downloads']:,}"
        )
        print(
            f"  manifest: {m['lines']:,} lines, {m.get('statuses')}, missing {m.get('missing')}, not terminal "
            f"{m['not_terminal']}, stored files missing {m['missing_files']}, ids it does not name {m['orphans']}"
        )
        phases = batch["phases_s"]
        calls = batch["phase_calls"]
        print(
            "  time: "
            + ", ".join(f"{name} {seconds:.1f} s ({calls.get(name, 0):,})" for name, seconds in sorted(phases.items()))
        )
        cpu = batch.get("phases_cpu_s", {})
        print("  CPU (own thread): " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in sorted(cpu.items())))
        tip = batch.get("trigger_in_process")
        if tip:
            per_poll = ratio(1000 * tip["cpu_s"], tip["polls"])
            print(
                f"  trigger in process: {tip['runs']} waits, {tip['wall_s']:.1f} s, {tip['cpu_s']:.1f} CPU s, "
                f"{tip['polls']:,} polls ({per_poll:.3f} CPU ms/poll, emulator), kwargs at most "
                f"{tip['kwargs_bytes_max']:,} bytes"
            )
    if trigger is not None:
        print()
        print(
            f"batch trigger alone: {trigger['n']:,} ids of {trigger['duration_s']:g} s polled every "
            f"{trigger['poll_interval_s']:g} s (lean server)"
        )
        for run in trigger["runs"]:
            print(
                f"  {run['watcher']:<14} {run['cpu_ms_per_poll']:.3f} CPU ms/poll, {run['polls_per_cpu_s']:,.0f} "
                f"polls/CPU s, {run['polls_per_prediction']:.2f} polls/prediction, {run['errors']} errors"
            )
    print()
    print(f"{'goal':<38}{'figure':<44}{'target':<11}verdict")
    for goal, figure, target, held in report["verdicts"]:
        print(f"{goal:<38}{figure:<44}{target:<11}{'n/a' if held is None else 'held' if held else 'NOT held'}")


def parent_main(args: argparse.Namespace) -> int:
    if args.creates_per_minute is None:
        args.creates_per_minute = args.create_limit
    report: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_before": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="batch-scale-") as tmp:
        workdir = Path(tmp)
        if args.n > 0:
            print(f"batch: {args.n:,} inputs ({args.mode}) ...", flush=True)
            report["batch"] = run_batch(args, workdir)
        if args.trigger_n > 0:
            print(f"batch trigger vs floor: {args.trigger_n:,} ids ...", flush=True)
            report["trigger"] = measure_trigger(args, workdir)
    report["load_after"] = os.getloadavg()
    report["verdicts"] = verdicts(report.get("batch"), report.get("trigger"))
    print_report(report)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=10_000, help="inputs in the batch (default 10,000; 0: skip)")
    p.add_argument("--mode", choices=("blocking", "deferrable"), default="blocking", help="how the batch waits")
    p.add_argument("--create-limit", type=float, default=6000.0, help="the emulator's creates a minute (6,000)")
    p.add_argument("--creates-per-minute", type=float, help="the operator's pace (default: the limit)")
    p.add_argument("--max-in-flight", type=int, default=1000, help="the operator's max_in_flight (default 1,000)")
    p.add_argument("--poll-interval", type=float, default=1.0, help="the operator's poll_interval (default 1 s)")
    p.add_argument("--min-duration", type=float, default=2.0, help="shortest prediction (default 2 s)")
    p.add_argument("--max-duration", type=float, default=5.0, help="longest prediction (default 5 s)")
    p.add_argument("--image-size", type=int, default=64, help="the emulator's image size (default 64 px)")
    p.add_argument("--timeout", type=float, default=1800.0, help="the batch's timeout (default 1,800 s)")
    p.add_argument("--trigger-n", type=int, default=1000, help="ids for the trigger-vs-floor runs (0: skip)")
    p.add_argument("--trigger-duration", type=float, default=5.0, help="their predictions' seconds (default 5)")
    p.add_argument("--trigger-poll-interval", type=float, default=1.0, help="their poll interval (default 1 s)")
    p.add_argument("--trigger-repeat", type=int, default=2, help="floor/trigger pairs (default 2)")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--profile", help="folder for a cProfile of the batch child")
    p.add_argument("--server-cpu", type=int, default=0, help="CPU for the emulator (default 0)")
    p.add_argument("--client-cpu", type=int, default=1, help="CPU for the measured child (default 1)")
    # The children's side (internal).
    p.add_argument("--child", choices=("worker", "batch-trigger", "floor"), help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--base-url", help=argparse.SUPPRESS)
    p.add_argument("--destination", help=argparse.SUPPRESS)
    p.add_argument("--api-key", default=API_KEY, help=argparse.SUPPRESS)
    p.add_argument("--watch-timeout", type=float, default=300.0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child == "worker":
        return worker_child(args)
    if args.child:
        return trigger_child(args)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
