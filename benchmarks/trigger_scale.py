"""Thousands of predictions in flight in one event loop: PredictionTrigger against the official
client and against the floor.

Two regimes by default: ``short`` (5 s predictions polled every 1 s) and ``long`` (20 s, every
5 s); ``--duration``/``--poll-interval`` make one custom regime instead. The polls are answered
by ``lean_server.py`` (``--server lean``, the default: the cheapest answers, so the floor is as
cheap as a client can be) or by the emulator (``--server emulator``). For each regime, N and
watcher, the server is reset and N predictions are created on it. One child process per
watcher, measured on its own, then watches all of them to completion in one asyncio event loop:

- ``trigger``: N ``PredictionTrigger``s driven as the triggerer drives them (a task per trigger
  running ``run()`` to its end, its event sent on as JSON, then ``cleanup()``);
- ``replicate``: the official ``replicate`` client (1.0.7) pointed at the emulator, one
  ``async_get`` + ``async_wait()`` per prediction at the same poll interval;
- ``replicate-capped``: the same client's ``async_reload()`` loop with at most ``--cap``
  requests in flight (a semaphore), its best setting in one loop;
- ``floor``: one shared aiohttp session doing only GET, parse, check status, sleep;
- ``trigger-metrics`` (not run by default): ``trigger`` with Airflow's StatsD metrics on
  (``[metrics] statsd_on``), sent to a UDP sink the parent reads: the cost of the provider's
  metrics (``airflow_provider_cometapi.metrics``) is its CPU per poll over ``trigger``'s.

The child reports CPU seconds (its own rusage, over the watch only), wall time, peak RSS and RSS
growth, and when it saw each prediction end; the emulator counts the polls. Detection delay is
the time from a prediction's ``completed_at`` (server clock) to the watcher seeing it (same
machine, same clock).

    .venv/bin/python benchmarks/trigger_scale.py --n 100 1000 --json bench-output/trigger_scale.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from _shared import medians_by_watcher, percentile, pin, trigger_ratios  # beside this script

REPO = Path(__file__).resolve().parents[1]
WATCHERS = ("trigger", "floor", "replicate", "replicate-capped", "trigger-metrics")
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
MODEL_PATH = "/replicate/v1/models/black-forest-labs/flux-schnell/predictions"
API_KEY = "bench-key"
# The regimes (prediction seconds, poll interval): FLUX schnell finishes in a few seconds and is
# polled every second; longer models are polled less often.
REGIMES = {"short": (5.0, 1.0), "long": (20.0, 5.0)}
# Connections per event loop for the floor, as the hook has (MAX_CONNECTIONS_PER_LOOP).
FLOOR_CONNECTIONS = 100


# --- The child: one watcher, measured on its own ----------------------------------------------


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _GcClock:
    """Seconds spent in the garbage collector, and collections per generation (a gc.callbacks hook)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.full = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        spent = time.perf_counter() - self._started
        self.total += spent
        self.collections[info["generation"]] += 1
        if info["generation"] == 2:
            self.full += spent


class Seen:
    """When the watcher saw each prediction end, with the server's completion time."""

    def __init__(self) -> None:
        self.at: dict[str, tuple[float, str | None, str]] = {}
        self.errors: list[str] = []

    def done(self, prediction_id: str, status: str, completed_at: str | None) -> None:
        self.at[prediction_id] = (time.time(), completed_at, status)

    def failed(self, prediction_id: str, error: object) -> None:
        self.errors.append(f"{prediction_id}: {error}")


async def watch_triggers(ids: list[str], args: argparse.Namespace, seen: Seen) -> None:
    from airflow_provider_cometapi.triggers.prediction import PredictionTrigger

    deadline = time.time() + args.watch_timeout
    # What the triggerer holds for each deferred task: the serialized classpath and kwargs.
    classpath, _ = PredictionTrigger("x", poll_interval=args.poll_interval).serialize()
    module_name, class_name = classpath.rsplit(".", 1)
    stored = [{"prediction_id": pid, "poll_interval": args.poll_interval, "deadline": deadline} for pid in ids]

    async def drive(kwargs: dict[str, Any]) -> None:
        # As the triggerer (TriggerRunner.run_trigger): build the trigger from its classpath and
        # kwargs, iterate run() to its end, send each event on as JSON (to its supervisor), then
        # cleanup(). The first event is the one the task resumes with.
        trigger_class = getattr(importlib.import_module(module_name), class_name)
        trigger = trigger_class(**kwargs)
        first = True
        try:
            async for event in trigger.run():
                payload = event.payload
                json.dumps(payload)
                if not first:
                    continue
                first = False
                prediction = payload.get("prediction") or {}
                if payload["status"] in TERMINAL:
                    seen.done(trigger.prediction_id, payload["status"], prediction.get("completed_at"))
                else:
                    seen.failed(trigger.prediction_id, payload.get("message"))
        finally:
            await trigger.cleanup()

    await asyncio.gather(*(asyncio.create_task(drive(kwargs)) for kwargs in stored))


async def watch_floor(ids: list[str], args: argparse.Namespace, seen: Seen) -> None:
    """
    The least a poller can do, with the trigger's HTTP client: GET, parse, check the status,
    sleep; at the end one event as JSON. Each prediction's URL is built once, the key is a
    session header, and nothing else is kept per prediction.
    """
    import aiohttp
    from yarl import URL

    headers = {"Authorization": f"Bearer {args.api_key}"}
    connector = aiohttp.TCPConnector(limit=FLOOR_CONNECTIONS)
    base = URL(args.base_url)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one(pid: str) -> None:
            url = base.with_path(f"/replicate/v1/predictions/{pid}")
            # The same de-synchronised first sleep as the trigger's, so both poll alike.
            await asyncio.sleep(args.poll_interval * random.uniform(0.5, 1.5))
            while True:
                async with session.get(url) as response:
                    body = await response.read()
                prediction = json.loads(body)
                if prediction["status"] in TERMINAL:
                    # The least end of a wait: one event, sent on as JSON.
                    json.dumps({"status": prediction["status"], "prediction_id": pid, "prediction": prediction})
                    seen.done(pid, prediction["status"], prediction.get("completed_at"))
                    return
                await asyncio.sleep(args.poll_interval)

        await _gather_counting_errors(ids, one, seen)


async def watch_replicate(ids: list[str], args: argparse.Namespace, seen: Seen, cap: int | None) -> None:
    import replicate

    client = replicate.Client(api_token=args.api_key, base_url=f"{args.base_url}/replicate")
    client.poll_interval = args.poll_interval
    limit = asyncio.Semaphore(cap) if cap else None

    async def plain(pid: str) -> None:
        prediction = await client.predictions.async_get(pid)
        await prediction.async_wait()
        seen.done(pid, prediction.status, prediction.completed_at)

    async def capped(pid: str) -> None:
        # async_wait()'s own loop, with every request under the semaphore.
        assert limit is not None
        async with limit:
            prediction = await client.predictions.async_get(pid)
        while prediction.status not in TERMINAL:
            await asyncio.sleep(client.poll_interval)
            async with limit:
                await prediction.async_reload()
        seen.done(pid, prediction.status, prediction.completed_at)

    try:
        await _gather_counting_errors(ids, capped if cap else plain, seen)
    finally:
        await client._async_client.aclose()


async def _gather_counting_errors(ids: list[str], one: Any, seen: Seen) -> None:
    async def guarded(pid: str) -> None:
        try:
            await one(pid)
        except Exception as error:
            seen.failed(pid, f"{type(error).__name__}: {error}")

    await asyncio.gather(*(guarded(pid) for pid in ids))


async def _watch(watcher: str, ids: list[str], args: argparse.Namespace, seen: Seen) -> None:
    if watcher in ("trigger", "trigger-metrics"):
        await watch_triggers(ids, args, seen)
    elif watcher == "floor":
        await watch_floor(ids, args, seen)
    elif watcher == "replicate":
        await watch_replicate(ids, args, seen, None)
    elif watcher == "replicate-capped":
        await watch_replicate(ids, args, seen, args.cap)
    else:
        raise ValueError(watcher)


def _import_watcher(watcher: str) -> None:
    """
    Imports outside the measurement: a triggerer has them loaded before its first trigger.

    The floor imports the same as the trigger: a heap the size of Airflow's makes every garbage
    collection dearer, and the floor must pay that too to be a floor for a triggerer.
    """
    if watcher in ("trigger", "floor", "trigger-metrics"):
        import airflow.providers.common.compat.connection
        import airflow.sdk.execution_time.context  # noqa: F401

        import airflow_provider_cometapi.triggers.prediction  # noqa: F401
    elif watcher.startswith("replicate"):
        import replicate  # noqa: F401
    import aiohttp  # noqa: F401


def child_main(args: argparse.Namespace) -> int:
    watcher = args.child
    _import_watcher(watcher)
    # Ready: the parent creates the predictions now and answers with the file of their ids.
    print("ready", flush=True)
    # From here on stdout (logs included) goes where stderr goes: nobody reads the pipe.
    os.dup2(2, 1)
    ids_file = sys.stdin.readline().strip()
    ids = json.loads(Path(ids_file).read_text())
    seen = Seen()
    profiler: Any = None
    if args.profile and args.profiler == "cprofile":
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    elif args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="disabled")
        profiler.start()
    if args.log == "triggerer":
        # As the triggerer's runner process logs: JSON records to its supervisor, unmasked
        # (airflow.sdk.execution_time.supervisor), here to a file beside the child's log.
        from airflow.sdk.log import configure_logging, reset_logging

        records = open(args.result + ".log", "wb", buffering=0)  # noqa: SIM115 (open until the child exits)
        reset_logging()
        configure_logging(json_output=True, output=records, sending_to_supervisor=True)
    # What the imports left for the collector is theirs, not the watch's: a triggerer that has
    # run a while does not carry it. A full collection during the watch is then the watch's own.
    gc.collect()
    if args.restart:
        # The lean server starts every prediction again now: however long creating them took
        # (seconds, on a busy machine), the watch sees predictions of the regime's duration.
        import urllib.request

        restart = urllib.request.Request(
            f"{args.base_url}/_lean/restart", method="POST", headers={"Authorization": f"Bearer {args.api_key}"}
        )
        with urllib.request.urlopen(restart, timeout=30) as answer:
            answer.read()
    gc_time = _GcClock()
    gc.callbacks.append(gc_time)
    rss_before = _rss_kib()
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    try:
        asyncio.run(asyncio.wait_for(_watch(watcher, ids, args, seen), args.watch_timeout + 30))
    except TimeoutError:
        seen.errors.append(f"the watch did not end within {args.watch_timeout + 30:g} s")
    wall = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu_before
    # The kernel's high-water mark lags the RSS it last read: never below what was seen.
    peak_kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, rss_before, _rss_kib())
    if profiler is not None and args.profiler == "cprofile":
        import pstats

        profiler.disable()
        with open(args.profile, "w") as out:
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(40)
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(60)
    elif profiler is not None:
        profiler.stop()
        Path(args.profile).write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    delays = []
    for _, (at, completed_at, _status) in seen.at.items():
        if completed_at:
            delays.append(at - datetime.fromisoformat(completed_at.replace("Z", "+00:00")).timestamp())
    succeeded = sum(1 for (_, _, status) in seen.at.values() if status == "succeeded")
    result = {
        "watcher": watcher,
        "n": len(ids),
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_before_mib": rss_before / 1024,
        "peak_rss_mib": peak_kib / 1024,
        "gc_s": gc_time.total,
        "gc_full_s": gc_time.full,
        "gc_collections": gc_time.collections,
        # Every prediction not seen succeeding: errors raised, other outcomes, never seen at all.
        "errors": len(ids) - succeeded,
        "error_samples": seen.errors[:5],
        "delays": delays,
    }
    Path(args.result).write_text(json.dumps(result))
    return 0


# --- The parent: emulator, predictions, one child per watcher ----------------------------------


async def _create(base_url: str, count: int, duration: float, concurrency: int = 32) -> list[str]:
    import aiohttp

    headers = {"Authorization": f"Bearer {API_KEY}"}
    ids: list[str] = []
    todo = iter(range(count))

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in todo:
            body = {"input": {"prompt": f"bench {i}", "_emulator": {"duration": duration, "starting_for": 0.5}}}
            async with session.post(MODEL_PATH, json=body) as response:
                answer = await response.json()
                if response.status != 201:
                    raise RuntimeError(f"create answered {response.status}: {answer}")
                ids.append(answer["id"])

    async with aiohttp.ClientSession(base_url, headers=headers) as session:
        await asyncio.gather(*(worker(session) for _ in range(min(concurrency, count))))
    return ids


def run_one(emulator: Any, watcher: str, n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    emulator.reset()
    ids_file = workdir / f"ids-{watcher}-{n}.json"
    result_file = workdir / f"result-{watcher}-{n}.json"
    log_file = workdir / f"child-{watcher}-{n}.log"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        watcher,
        "--result",
        str(result_file),
        "--base-url",
        emulator.base_url,
        "--api-key",
        API_KEY,
        "--poll-interval",
        str(args.poll_interval),
        "--watch-timeout",
        str(args.watch_timeout),
        "--cap",
        str(args.cap),
        "--log",
        args.log,
    ]
    if args.server == "lean":
        command.append("--restart")
    if args.profile:
        command += ["--profile", str(Path(args.profile) / f"profile-{watcher}-{n}.txt"), "--profiler", args.profiler]
    env = {**os.environ, **emulator.airflow_env(), "PYTHONPATH": str(REPO)}
    sink = None
    if watcher == "trigger-metrics":
        sys.path.insert(0, str(REPO))
        from tests.statsd import StatsdListener

        sink = StatsdListener()
    if sink is not None:
        env.update(
            AIRFLOW__METRICS__STATSD_ON="True",
            AIRFLOW__METRICS__STATSD_HOST="127.0.0.1",
            AIRFLOW__METRICS__STATSD_PORT=str(sink.port),
        )
    children_cpu = _children_cpu_seconds()
    with log_file.open("w") as log:
        child = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=REPO
        )
        try:
            pin(child.pid, args.client_cpu)
            assert child.stdout is not None
            assert child.stdin is not None
            if child.stdout.readline().strip() != "ready":
                child.wait(30)
                raise RuntimeError(f"{watcher} child did not start; see {log_file}:\n{log_file.read_text()[-3000:]}")
            ids = asyncio.run(_create(emulator.base_url, n, args.duration))
            ids_file.write_text(json.dumps(ids))
            child.stdin.write(f"{ids_file}\n")
            child.stdin.flush()
            try:
                code = child.wait(args.watch_timeout + 60)
            except subprocess.TimeoutExpired:
                # Its own timeout did not end it (a loop too busy to cancel its waits): a collapse.
                child.kill()
                child.wait()
                return _did_not_finish(emulator, watcher, n, args.watch_timeout + 60, children_cpu)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    if code != 0 or not result_file.exists():
        raise RuntimeError(f"{watcher} child exited {code}; see {log_file}:\n{log_file.read_text()[-3000:]}")
    result: dict[str, Any] = json.loads(result_file.read_text())
    if sink is not None:
        sink.close()
        result["metric_lines"] = len(sink.lines)
    polls = emulator.stats(detail=False)["polls"]
    delays = result.pop("delays")
    result.update(
        polls=polls,
        polls_per_prediction=polls / n,
        cpu_ms_per_poll=1000 * result["cpu_s"] / polls if polls else float("nan"),
        polls_per_cpu_s=polls / result["cpu_s"] if result["cpu_s"] else float("nan"),
        growth_mib_per_1000=(result["peak_rss_mib"] - result["rss_before_mib"]) * 1000 / n,
        delay_mean_s=statistics.fmean(delays) if delays else float("nan"),
        delay_p95_s=percentile(delays, 0.95),
        delay_max_s=max(delays) if delays else float("nan"),
    )
    return result


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _did_not_finish(emulator: Any, watcher: str, n: int, waited: float, children_cpu: float) -> dict[str, Any]:
    """A child killed after ``waited`` s: its whole CPU (imports too), the polls it made, all errors."""
    polls = emulator.stats(detail=False)["polls"]
    cpu = _children_cpu_seconds() - children_cpu
    nan = float("nan")
    return {
        "watcher": watcher,
        "n": n,
        "wall_s": waited,
        "cpu_s": cpu,
        "rss_before_mib": nan,
        "peak_rss_mib": nan,
        "gc_s": nan,
        "errors": n,
        "error_samples": [f"did not finish within {waited:g} s; killed"],
        "did_not_finish": True,
        "polls": polls,
        "polls_per_prediction": polls / n,
        "cpu_ms_per_poll": 1000 * cpu / polls if polls else nan,
        "polls_per_cpu_s": polls / cpu if cpu else nan,
        "growth_mib_per_1000": nan,
        "delay_mean_s": nan,
        "delay_p95_s": nan,
        "delay_max_s": nan,
    }


def emulator_capacity(seconds: float) -> dict[str, Any]:
    """The emulator's own limit (polls/s on one core), from benchmarks/emulator_throughput.py."""
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "emulator_throughput.py"),
        "--predictions",
        "10000",
        "--concurrency",
        "64",
        "--client",
        "raw",
        "--seconds",
        str(seconds),
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO).stdout
    line = next(line for line in output.splitlines() if line.startswith("polls:"))
    rate = float(line.split("=")[1].split("polls/s")[0])
    return {"polls_per_s": rate, "line": line}


def print_table(results: list[dict[str, Any]]) -> None:
    head = (
        f"{'watcher':<17}{'N':>7}{'wall s':>8}{'CPU s':>8}{'CPU ms/poll':>12}{'polls/CPU s':>12}{'peak RSS MiB':>13}"
        f"{'MiB/1000':>9}{'polls/pred':>11}{'delay mean':>11}{'p95':>7}{'errors':>7}"
    )
    for regime in _regimes_in(results):
        rows = [r for r in results if r["regime"] == regime]
        print(f"{regime}: {rows[0]['duration_s']:g} s predictions, polls every {rows[0]['poll_interval_s']:g} s")
        print(head)
        for r in rows:
            print(
                f"{r['watcher']:<17}{r['n']:>7}{r['wall_s']:>8.1f}{r['cpu_s']:>8.2f}{r['cpu_ms_per_poll']:>12.3f}"
                f"{r['polls_per_cpu_s']:>12,.0f}{r['peak_rss_mib']:>13.1f}{r['growth_mib_per_1000']:>9.1f}"
                f"{r['polls_per_prediction']:>11.2f}{r['delay_mean_s']:>11.2f}{r['delay_p95_s']:>7.2f}{r['errors']:>7}"
            )
        print()
        print(
            f"{'ratios':<17}{'N':>7}{'CPU/poll vs floor':>19}{'vs replicate':>14}{'vs capped':>11}"
            f"{'growth vs floor':>17}"
        )
        for n in sorted({r["n"] for r in rows}):
            by = medians_by_watcher([r for r in rows if r["n"] == n])
            if "trigger" not in by:
                continue
            ratios = trigger_ratios(by)
            print(
                f"{'trigger':<17}{n:>7}{ratios['floor']:>19.2f}{ratios['replicate']:>14.2f}"
                f"{ratios['replicate-capped']:>11.2f}{ratios['growth']:>17.2f}"
            )
        print()


def print_metrics_cost(results: list[dict[str, Any]]) -> None:
    """trigger-metrics over trigger, per regime and N: each run over the mean of trigger's."""
    for regime in _regimes_in(results):
        for n in sorted({r["n"] for r in results if r["regime"] == regime}):
            on = [
                r["cpu_ms_per_poll"]
                for r in results
                if (r["regime"], r["n"], r["watcher"]) == (regime, n, "trigger-metrics")
            ]
            off = [
                r["cpu_ms_per_poll"] for r in results if (r["regime"], r["n"], r["watcher"]) == (regime, n, "trigger")
            ]
            if on and off:
                mean_off = statistics.fmean(off)
                print(
                    f"{regime} N={n}: metrics on {', '.join(f'{x:.3f}' for x in on)} ms/poll, off "
                    f"{', '.join(f'{x:.3f}' for x in off)}; on / mean(off) = "
                    f"{', '.join(f'{x / mean_off:.2f}' for x in on)}"
                )


def _regimes_in(results: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["regime"] for r in results))


def regimes_of(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The regimes to run: the named ones, or one ``custom`` regime from --duration/--poll-interval."""
    if args.duration is not None or args.poll_interval is not None:
        duration = args.duration if args.duration is not None else REGIMES["long"][0]
        interval = args.poll_interval if args.poll_interval is not None else REGIMES["long"][1]
        return [{"name": "custom", "duration_s": duration, "poll_interval_s": interval}]
    return [
        {"name": name, "duration_s": REGIMES[name][0], "poll_interval_s": REGIMES[name][1]} for name in args.regimes
    ]


def _server(kind: str, duration: float) -> Any:
    if kind == "lean":
        from lean_server import LeanServerProcess  # beside this script

        return LeanServerProcess(api_key=API_KEY, duration=duration, starting_for=0.5)
    from airflow_provider_cometapi.emulator.testing import EmulatorProcess

    return EmulatorProcess(api_key=API_KEY, duration=duration, starting_for=0.5)


def parent_main(args: argparse.Namespace) -> int:
    results: list[dict[str, Any]] = []
    regimes = regimes_of(args)
    report: dict[str, Any] = {
        "server": args.server,
        "regimes": regimes,
        # The first regime's, for readers of the one-regime format.
        "poll_interval_s": regimes[0]["poll_interval_s"],
        "duration_s": regimes[0]["duration_s"],
        "cap": args.cap,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "results": results,
    }
    if args.capacity_seconds > 0:
        report["emulator_capacity"] = emulator_capacity(args.capacity_seconds)
        print(f"emulator capacity: {report['emulator_capacity']['line']}")
    with tempfile.TemporaryDirectory(prefix="trigger-scale-") as tmp:
        for regime in regimes:
            args.duration, args.poll_interval = regime["duration_s"], regime["poll_interval_s"]
            with _server(args.server, args.duration) as server:
                assert server.pid is not None
                pin(server.pid, args.server_cpu)
                for n in args.n:
                    # Repeats interleave the watchers (floor, trigger, floor, trigger), so that a
                    # quiet or a busy minute on the machine falls on both alike.
                    for _ in range(args.repeat):
                        for watcher in args.watchers:
                            result = run_one(server, watcher, n, args, Path(tmp))
                            result.update(
                                regime=regime["name"],
                                duration_s=args.duration,
                                poll_interval_s=args.poll_interval,
                                server=args.server,
                            )
                            results.append(result)
                            print(
                                f"{regime['name']} {watcher} N={n}: {result['cpu_ms_per_poll']:.3f} CPU ms/poll "
                                f"({result['polls_per_cpu_s']:,.0f} polls/CPU s), "
                                f"{result['peak_rss_mib']:.0f} MiB peak, p95 delay {result['delay_p95_s']:.2f} s, "
                                f"GC {result['gc_s']:.2f} s ({result.get('gc_collections', [0, 0, 0])[2]} full: "
                                f"{result.get('gc_full_s', float('nan')):.2f} s), {result['errors']} errors"
                                + (f", {result['metric_lines']} metric lines" if "metric_lines" in result else ""),
                                flush=True,
                            )
    print()
    print_table(results)
    print_metrics_cost(results)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--n", type=int, nargs="+", default=[100], help="predictions in flight, one run each (default 100)")
    p.add_argument(
        "--watchers",
        nargs="+",
        choices=WATCHERS,
        default=[w for w in WATCHERS if w != "trigger-metrics"],
        help="default: all but trigger-metrics",
    )
    p.add_argument(
        "--regimes",
        nargs="+",
        choices=sorted(REGIMES),
        default=list(REGIMES),
        help="short: 5 s predictions polled every 1 s; long: 20 s, every 5 s (default: both)",
    )
    p.add_argument("--poll-interval", type=float, help="seconds between polls: one custom regime instead")
    p.add_argument("--duration", type=float, help="seconds each prediction runs: one custom regime instead")
    p.add_argument(
        "--server",
        choices=("lean", "emulator"),
        default="lean",
        help="what answers the polls: the lean server (default; the floor at its cheapest) or the emulator",
    )
    p.add_argument(
        "--repeat", type=int, default=1, help="runs of each watcher, interleaved; ratios are of medians (default 1)"
    )
    p.add_argument("--cap", type=int, default=100, help="requests in flight for replicate-capped (default 100)")
    p.add_argument("--watch-timeout", type=float, default=300.0, help="give up watching after (default 300 s)")
    p.add_argument("--capacity-seconds", type=float, default=0.0, help="measure the emulator's capacity first")
    p.add_argument(
        "--log",
        choices=("triggerer", "default"),
        default="triggerer",
        help="the child's logging: as the triggerer's runner (JSON, unmasked; default) or Airflow's default console",
    )
    p.add_argument("--json", help="write the results here")
    p.add_argument("--profile", help="folder for a pyinstrument profile of each child")
    p.add_argument("--profiler", choices=("pyinstrument", "cprofile"), default="pyinstrument", help="for --profile")
    p.add_argument("--server-cpu", type=int, default=0, help="CPU for the server (default 0)")
    p.add_argument("--client-cpu", type=int, default=1, help="CPU for the watchers (default 1)")
    # The child's side (internal).
    p.add_argument("--child", choices=WATCHERS, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--base-url", help=argparse.SUPPRESS)
    p.add_argument("--api-key", default=API_KEY, help=argparse.SUPPRESS)
    p.add_argument("--restart", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return child_main(args) if args.child else parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
