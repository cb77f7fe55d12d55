"""Write the performance page (markdown tables and a PNG plot) from the benchmarks' JSON results.

The page is its template, ``benchmarks/page/performance.md``, with each ``<!-- results: NAME -->``
line replaced by the section made from that benchmark's JSON and ``{{ command }}`` by the command
that ran them. The hand-written prose lives in the template, so regenerating the page keeps it.
A benchmark given no results keeps the section the page already has (its run's date in it), so
one benchmark's figures can be written again alone (``--fresh``: a line saying it was not run).

    .venv/bin/python benchmarks/report.py --scale bench-output/trigger_scale.json \
        --deployment bench-output/deployment.json --batch-scale bench-output/batch_scale.json \
        --batch-vs-mapped bench-output/batch_vs_mapped.json --batch-faults bench-output/batch_faults.json \
        --out docs/performance.md
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _shared import executions_done, medians_by_watcher, ratio, run_rows_written, trigger_ratios  # beside this script

WATCHER_NAMES = {
    "trigger": "PredictionTrigger",
    "floor": "floor (raw aiohttp loop)",
    "replicate": "replicate 1.0.7, async_wait()",
    "replicate-capped": "replicate 1.0.7, capped",
}
IMAGE = "img/performance.png"
TEMPLATE = Path(__file__).resolve().parent / "page" / "performance.md"
MARKER = re.compile(r"^<!-- results: (\w+) -->$", re.MULTILINE)


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("holds" if ok else "**does not hold**")


def scale_section(scale: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The page's lines for the watchers, and a list of the targets that do not hold."""
    interval, duration, cap = scale["poll_interval_s"], scale["duration_s"], scale["cap"]
    results = scale["results"]
    misses: list[str] = []
    regime = scale.get("regime")
    out = [
        "## Thousands of predictions in one triggerer" + (f" ({regime} regime)" if regime else ""),
        "",
        f"`benchmarks/trigger_scale.py`: N predictions of {duration:g} s each on the emulator, watched to the end "
        f"in one asyncio event loop by a child process measured on its own, polling every {interval:g} s. The "
        "watchers: N `PredictionTrigger`s driven as the triggerer drives them (a task per trigger: `run()` to "
        "its end, then `cleanup()`); the official `replicate` client 1.0.7 pointed at the emulator, one "
        f"`async_get()` + `async_wait()` per prediction, plain and with at most {cap} requests in flight (a "
        "semaphore around its `async_reload()` loop, its best setting in one loop); and the floor, one shared "
        "aiohttp session doing only GET, parse, check status, sleep.",
        "",
        "CPU is the child's own user + system time over the watch only (imports excluded), divided by the polls "
        "the emulator counted. Memory growth is peak RSS minus the RSS before the watch, per 1,000 watchers. "
        "Detection delay is from the prediction's `completed_at` (server clock) to the watcher seeing it (same "
        "machine clock).",
        "",
    ]
    capacity = scale.get("emulator_capacity")
    if capacity:
        needed = max(r["n"] for r in results) / interval
        out += [
            f"**Emulator capacity:** {capacity['polls_per_s']:,.0f} polls/s on one core "
            f"(`benchmarks/emulator_throughput.py --client raw`, 10,000 predictions in flight). "
            f"{max(r['n'] for r in results):,} predictions polled every {interval:g} s need about {needed:,.0f} "
            "polls/s, which it serves with room to spare; the watchers, not the emulator, set the pace.",
            "",
        ]
    out += [
        f"Machine: {scale['cpus']} CPUs, shared with other work while it ran (wall times and delays are from that "
        "machine; CPU time is per process, so the ratios hold); emulator pinned to one CPU, watchers to the other. "
        f"Python {scale['python']}; run {scale['started']}.",
        "",
        "| watcher | N | wall s | CPU s | CPU ms/poll | polls/CPU s | peak RSS MiB | growth MiB/1,000 "
        "| polls/prediction | delay mean s | delay p95 s | GC s | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        out.append(
            f"| {WATCHER_NAMES.get(r['watcher'], r['watcher'])}"
            f"{' (did not finish: killed, CPU includes its imports)' if r.get('did_not_finish') else ''} "
            f"| {r['n']:,} | {_fmt(r['wall_s'], 1)} "
            f"| {_fmt(r['cpu_s'])} | {_fmt(r['cpu_ms_per_poll'], 3)} "
            f"| {_fmt(r.get('polls_per_cpu_s', float('nan')), 0)} | {_fmt(r['peak_rss_mib'], 0)} "
            f"| {_fmt(r['growth_mib_per_1000'], 1)} | {_fmt(r['polls_per_prediction'])} | {_fmt(r['delay_mean_s'])} "
            f"| {_fmt(r['delay_p95_s'])} | {_fmt(r.get('gc_s', float('nan')))} | {r['errors']:,} |"
        )
    failed = [r for r in results if r["errors"]]
    if failed:
        out += ["", "Errors, with the first one reported:", ""]
        for r in failed:
            sample = (r.get("error_samples") or ["?"])[0].split(": ", 1)[-1].rstrip(": ") or "?"
            out.append(
                f"- {WATCHER_NAMES.get(r['watcher'], r['watcher'])} at N = {r['n']:,}: {r['errors']:,} of "
                f"{r['n']:,} predictions not seen to succeed, {r['polls']:,} polls reached the emulator, "
                f"{_fmt(r['cpu_s'], 1)} CPU s in {_fmt(r['wall_s'], 1)} s; `{sample}`."
            )
    out += [
        "",
        f"![CPU per poll and peak RSS against N]({IMAGE})",
        "",
        "### Targets",
        "",
        "| N | trigger CPU/poll ÷ floor (≤ 1.5) | ÷ replicate (≤ 0.2) | ÷ replicate capped (≤ 0.2) "
        "| growth ÷ floor (≤ 1.5) | p95 delay (≤ interval + 0.5 s) | polls/prediction (≤ duration/interval + 2) "
        "| errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    polls_limit = duration / interval + 2
    delay_limit = interval + 0.5
    for n in sorted({r["n"] for r in results}):
        by = medians_by_watcher([r for r in results if r["n"] == n])
        t = by.get("trigger")
        if t is None:
            continue

        ratios = trigger_ratios(by)
        vs_floor, vs_plain, vs_capped, growth = (
            ratios["floor"],
            ratios["replicate"],
            ratios["replicate-capped"],
            ratios["growth"],
        )
        best = _best_replicate(by)
        vs_best = ratios[best] if best else float("nan")
        checks = {
            "CPU/poll ≤ 1.5x the floor": None if math.isnan(vs_floor) else vs_floor <= 1.5,
            f"CPU/poll ≤ 0.2x replicate at its best setting ({best})": None if math.isnan(vs_best) else vs_best <= 0.2,
            "memory growth ≤ 1.5x the floor": None if math.isnan(growth) else growth <= 1.5,
            f"p95 delay ≤ {delay_limit:g} s": t["delay_p95_s"] <= delay_limit,
            f"polls/prediction ≤ {polls_limit:g}": t["polls_per_prediction"] <= polls_limit,
            "no errors": t["errors"] == 0,
        }
        misses += [f"{name} at N = {n:,}" for name, ok in checks.items() if ok is False]
        out.append(
            f"| {n:,} | {_fmt(vs_floor)} | {_fmt(vs_plain, 3)} | {_fmt(vs_capped, 3)} | {_fmt(growth)} "
            f"| {_fmt(t['delay_p95_s'])} | {_fmt(t['polls_per_prediction'])} | {t['errors']} |"
        )
    big = [r for r in results if r["watcher"] == "trigger" and r["n"] >= 10_000]
    if big:
        r = big[-1]
        ok = r["peak_rss_mib"] <= 300 and r["errors"] == 0
        if not ok:
            misses.append(f"{r['n']:,} triggers at ≤ 300 MB peak RSS with no errors")
        out += [
            "",
            f"{r['n']:,} triggers in flight in one process: peak RSS {r['peak_rss_mib']:.0f} MiB "
            f"({r['rss_before_mib']:.0f} MiB of it Airflow and the provider imported before the first trigger), "
            f"{r['errors']} errors: target ≤ 300 MB with no errors {_verdict(ok)}.",
        ]
    # The ratio to replicate depends on how far above the floor replicate itself is.
    floor_vs_rep = []
    for n in sorted({r["n"] for r in results}):
        by = medians_by_watcher([r for r in results if r["n"] == n])
        best = _best_replicate(by)
        if "floor" in by and best:
            floor_share = ratio(by["floor"]["cpu_ms_per_poll"], by[best]["cpu_ms_per_poll"])
            floor_vs_rep.append(f"{_fmt(floor_share)}x at N = {n:,}")
    if floor_vs_rep:
        out += [
            "",
            "The floor's own CPU per poll, against replicate's at its best setting: " + ", ".join(floor_vs_rep) + ". "
            "Where that is above 0.2, even the floor does not reach 0.2x replicate, and a trigger within 1.5x of "
            "the floor cannot either: that target is then out of reach by construction, not by the trigger's cost.",
        ]
    out += [
        "",
        "replicate's short delays where it keeps up are lockstep, not speed: it polls every prediction at once "
        "from the start, so predictions created together whose duration is a multiple of the interval are seen "
        "just after they end. The trigger (and the floor) spread their first poll over 0.5-1.5 intervals, so "
        "their delays spread evenly over one interval; where replicate cannot keep up, its delays grow past it.",
    ]
    return out, misses


def regime_parts(scale: dict[str, Any]) -> list[dict[str, Any]]:
    """The scale results one regime at a time (results without a regime are one part)."""
    names = list(dict.fromkeys(r.get("regime") for r in scale["results"]))
    if names == [None]:
        return [scale]
    parts = []
    for name in names:
        rows = [r for r in scale["results"] if r.get("regime") == name]
        parts.append(
            {
                **scale,
                "regime": name,
                "results": rows,
                "poll_interval_s": rows[0]["poll_interval_s"],
                "duration_s": rows[0]["duration_s"],
            }
        )
    return parts


def _best_replicate(by: dict[str, Any]) -> str | None:
    """replicate's best setting at this N: fewest errors, then least CPU per poll."""
    runs = [by[name] for name in ("replicate", "replicate-capped") if name in by]
    if not runs:
        return None
    return str(min(runs, key=lambda r: (r["errors"], r["cpu_ms_per_poll"]))["watcher"])


def deployment_section(deployment: dict[str, Any]) -> tuple[list[str], list[str]]:
    by = {r["dag_id"]: r for r in deployment["results"]}
    n, seconds, slots = deployment["predictions"], deployment["prediction_seconds"], deployment["slots"]
    limit = 1.5 * seconds + 30
    misses: list[str] = []
    out = [
        "## Worker slots in a real deployment",
        "",
        f"`benchmarks/deployment_slots.py`: the end-to-end tier's deployment (PostgreSQL, api-server, scheduler, "
        f"dag-processor, triggerer; LocalExecutor with {slots} worker slots) runs {n} predictions of {seconds:g} s "
        "each (DAGs in `benchmarks/dags/`), polling every 2 s; wall time from the run's start to its end. "
        f"Started {deployment['started']}, on the same shared machine.",
        "",
        "| how the tasks wait | wall s | tasks | most tries | failed tasks |",
        "|---|---:|---:|---:|---:|",
    ]
    labels = {
        "bench_deferrable": "deferrable operator (triggerer)",
        "bench_blocking": "non-deferrable operator (polls on the worker)",
        "bench_reschedule": "create, then PredictionSensor in reschedule mode",
    }
    for dag_id, label in labels.items():
        if dag_id in by:
            r = by[dag_id]
            out.append(f"| {label} | {_fmt(r['wall_s'], 1)} | {r['tasks']} | {r['max_try']} | {r['failed_tasks']} |")
    if by.get("bench_reschedule", {}).get("max_try", 1) > 1:
        out += [
            "",
            'Some reschedule-mode sensors needed a second try: the executor\'s "success" for a poke can arrive '
            "after the sensor was queued again, and the scheduler then marks it up for retry (apache/airflow#10790, "
            "seen here on Airflow 3.3). The DAG gives the sensors three retries 2 s apart, so the run rides it out.",
        ]
    if "bench_deferrable" in by:
        wall = by["bench_deferrable"]["wall_s"]
        ok = wall <= limit
        if not ok:
            misses.append(f"deferrable {n} x {seconds:g} s on {slots} slots ≤ {limit:g} s")
        out += [
            "",
            f"Target: deferrable ≤ 1.5 x {seconds:g} s + 30 s = {limit:g} s: {_fmt(wall, 1)} s, {_verdict(ok)}.",
        ]
    if "bench_prefer_wait" in by and "bench_deferred_short" in by:
        out += [
            "",
            "A 1-second prediction, the task's wall time:",
            "",
            "| how the task waits | task wall s | run wall s |",
            "|---|---:|---:|",
            "| `prefer_wait=30` (`Prefer: wait`, answered when done) "
            f"| {_fmt(by['bench_prefer_wait']['task_wall_s'], 1)} "
            f"| {_fmt(by['bench_prefer_wait']['wall_s'], 1)} |",
            f"| deferrable, `poll_interval=1` | {_fmt(by['bench_deferred_short']['task_wall_s'], 1)} "
            f"| {_fmt(by['bench_deferred_short']['wall_s'], 1)} |",
        ]
    return out, misses


def plot(scale: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cpu_ax, rss_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for watcher in WATCHER_NAMES:
        rows = sorted((r for r in scale["results"] if r["watcher"] == watcher), key=lambda r: r["n"])
        if not rows:
            continue
        ns = [r["n"] for r in rows]
        cpu_ax.plot(ns, [r["cpu_ms_per_poll"] for r in rows], marker="o", label=WATCHER_NAMES[watcher])
        rss_ax.plot(ns, [r["peak_rss_mib"] for r in rows], marker="o", label=WATCHER_NAMES[watcher])
    for ax, title in ((cpu_ax, "CPU ms per poll"), (rss_ax, "peak RSS (MiB)")):
        ax.set_xscale("log")
        ax.set_xlabel("predictions in flight (N)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    cpu_ax.set_yscale("log")
    capacity = scale.get("emulator_capacity")
    note = f"; emulator capacity {capacity['polls_per_s']:,.0f} polls/s" if capacity else ""
    fig.suptitle(f"One event loop, poll interval {scale['poll_interval_s']:g} s{note}")
    cpu_ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def batch_scale_section(runs: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """One table of goals per run of batch_scale.py (a mode each), from its verdicts."""
    misses: list[str] = []
    out: list[str] = []
    for run in runs:
        batch = run.get("batch") or {}
        mode = batch.get("mode", "trigger only")
        if batch:
            out += [
                f"`benchmarks/batch_scale.py --mode {mode}`: {batch['n']:,} inputs, create limit "
                f"{batch['create_limit_per_minute']:,.0f} a minute, `creates_per_minute="
                f"{batch['creates_per_minute']:,.0f}`, `max_in_flight={batch['max_in_flight']}`; wall "
                f"{_fmt(batch['wall_s'], 1)} s, worker CPU {_fmt(batch['cpu_s'], 1)} s. Run {run['started']} on "
                f"{run['cpus']} CPUs{_load(run)}.",
                "",
            ]
        out += ["| goal | figure | target | verdict |", "|---|---|---|---|"]
        for goal, figure, target, held in run["verdicts"]:
            out.append(f"| {goal} | {figure} | {target} | {_held(held)} |")
            if held is False:
                misses.append(f"{goal} ({mode}): {figure}, target {target}")
        out.append("")
    return out, misses


def _load(run: dict[str, Any]) -> str:
    """The machine's 1-minute load average before and after a run, where the run recorded it."""
    if "load_before" not in run or "load_after" not in run:
        return ""
    return f" (load average {run['load_before'][0]:.1f} before, {run['load_after'][0]:.1f} after)"


def _held(ok: bool | None) -> str:
    return "n/a" if ok is None else ("held" if ok else "**not held**")


DESIGNS = {
    "mapped": "mapped: `@task.cometapi` (deferrable) + `SavePredictionOutputsOperator`",
    "batch": "batch: one `CreatePredictionBatchOperator`",
}


def batch_vs_mapped_section(report: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Both designs side by side, the ratio of their wall times and its verdict."""
    n, results = report["n"], report["results"]
    designs = [name for name in DESIGNS if name in results]
    out = [
        f"`benchmarks/batch_vs_mapped.py --n {n}` (DAGs in `benchmarks/dags/bench_batch_vs_mapped.py`): the "
        "end-to-end tier's deployment (PostgreSQL, api-server, scheduler, dag-processor, triggerer; "
        f"LocalExecutor with {report['slots']} worker slots, `parallelism={report['slots']}`; "
        f"`[core] max_map_length` set to {max(1024, n):,}) and the emulator, {n:,} prompts of "
        f"{report['prediction_seconds']:g} s each ({report['image_size']}-pixel WebP images), each design storing "
        "every output in a `file://` destination, polling every 1 s. Wall time: the DAG run's start to its end. "
        "Worker-slot seconds: the LocalExecutor workers busy with a task, summed over time (their process titles, "
        "sampled every 0.1 s; a deferred task holds none); the task instances in `running` are summed from the "
        "metadata DB every second. Task executions: task instances started, plus a resume per deferral and a try "
        "per retry. Rows written: `n_tup_ins + n_tup_upd` of `pg_stat_user_tables` across the run, in the tables "
        "a run writes (the components' heartbeats in `job` and the dag-processor's parses apart). Per prompt: of "
        "a run cut short, scaled from the executions it did to the 1 + 3N a whole mapped run needs (marked ≈). "
        f"Run {report['started']} on {report['cpus']} CPUs shared with other developers' work.",
        "",
        "| figure | "
        + " | ".join(DESIGNS[name] for name in designs)
        + (" | batch ÷ mapped |" if len(designs) == 2 else " |"),
        "|---|" + "---:|" * (len(designs) + (1 if len(designs) == 2 else 0)),
    ]
    rows: list[tuple[str, Callable[[dict[str, Any]], float], int]] = [
        ("wall time, s", lambda r: r["wall_s"], 1),
        ("outputs stored (images decoded)", lambda r: r["stored"]["images"] - r["stored"]["broken_images"], 0),
        ("emulator creates", lambda r: r["creates"], 0),
        ("task instances", lambda r: r["task_instances"], 0),
        ("task executions (started, resumes, retries)", executions_done, 0),
        ("retries", lambda r: r["retries"], 0),
        ("worker-slot seconds", lambda r: r["worker_slot_s"], 0),
        ("task instances in `running`, summed, s", lambda r: r["running_s"], 0),
        ("worker-slot seconds per task execution", lambda r: ratio(r["worker_slot_s"], executions_done(r)), 2),
        ("worker-slot seconds per prompt", lambda r: per_prompt(r, r["worker_slot_s"], n), 2),
        ("metadata-DB rows written (the run's tables)", lambda r: run_rows_written(r["per_table"]), 0),
        ("rows written per prompt", lambda r: per_prompt(r, run_rows_written(r["per_table"]), n), 2),
        ("rows written, every table (heartbeats, parses too)", lambda r: r["rows_written"], 0),
        ("failed task instances", lambda r: r["states"].get("failed", 0), 0),
    ]
    for label, figure, digits in rows:
        values = [figure(results[name]) for name in designs]
        cells = [
            ("≈ " if "per prompt" in label and results[name]["state"] == "timeout" else "") + _fmt(float(v), digits)
            for name, v in zip(designs, values, strict=True)
        ]
        if len(designs) == 2:
            cells.append(_fmt(ratio(values[1], values[0]), 3))
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += ["", "Where the rows went (the most written tables, inserts + updates):", ""]
    for name in designs:
        per_table = results[name]["per_table"]
        top = sorted(per_table.items(), key=lambda item: -(item[1]["ins"] + item[1]["upd"]))[:6]
        out.append(f"- {name}: " + ", ".join(f"`{table}` {d['ins'] + d['upd']:,}" for table, d in top))
    misses: list[str] = []
    mapped, batch = results.get("mapped"), results.get("batch")
    for name in designs:
        r = results[name]
        if r["state"] != "success":
            out += [
                "",
                f"The {name} run did not end: {r['state']} after {_fmt(r['wall_s'], 0)} s, "
                f"{r['stored']['images']:,} of {n:,} outputs stored, task instances {r['states']}.",
            ]
    if mapped and batch:
        value, goal = report["ratio"], report["goal"]
        bound = ""
        if mapped["state"] == "timeout":
            done, whole = executions_done(mapped), 1 + 3 * n  # prompts; per prompt a create, its resume, a store
            estimate = mapped["wall_s"] * whole / done if done else float("nan")
            bound = (
                f" The mapped run was stopped after {_fmt(mapped['wall_s'], 0)} s, having done {done:,} of the "
                f"{whole:,} task executions a whole run needs (each prompt: create, resume, store): its wall time is "
                f"at least that, so the ratio is at most the figure shown (as is every batch ÷ mapped ratio of a "
                f"total above: the mapped totals are those so far). At the pace it kept, the whole run would "
                f"take about {_fmt(estimate, 0)} s (ratio about {_fmt(ratio(batch['wall_s'], estimate), 3)})."
            )
            if mapped["task_instances_by_task"].get("store", 0) <= 1:
                bound += (
                    " It had stored nothing yet: a task mapped over a mapped task's output is expanded only once "
                    "every upstream instance has ended, so the mapped design stores no output before the last "
                    "prediction is made."
                )
        out += [
            "",
            f"**Goal: batch wall time ≤ {goal:g}x mapped: {_fmt(value, 3)}x, {_held(report['held'])}.**{bound}",
        ]
        if not report["held"]:
            misses.append(f"batch wall ≤ {goal:g}x mapped at N = {n:,}: {_fmt(value, 3)}x")
    return out, misses


def per_prompt(result: dict[str, Any], value: float, n: int) -> float:
    """``value`` per prompt; of a mapped run cut short, scaled from its executions to a whole run's 1 + 3N."""
    if result["state"] != "timeout":
        return value / n
    return ratio(value, executions_done(result)) * (1 + 3 * n) / n


def batch_faults_section(report: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The goals of the faults benchmark, from the e2e batch test's figures."""

    def shown(name: str) -> str:
        value = report.get(name)
        return "?" if value is None else f"{value}"

    out = [
        f"`benchmarks/batch_faults.py` runs `{report['test']}` (a real deployment: PostgreSQL, LocalExecutor with "
        f"2 slots, triggerer; {report.get('inputs', '?')} inputs in one deferrable batch, waves of 10, two retries) "
        "and reads its figures before the deployment is torn down. The test SIGKILLs the task process while it "
        f"creates (after {shown('creates_before_first_kill')} creates), stops the triggerer and starts a new one "
        f"while the retry waits ({shown('triggerer_restarts')} restart), and SIGKILLs the task again while it stores "
        f"({shown('stored_at_second_kill')} images stored, {shown('downloads_at_second_kill')} downloads started); a "
        "kill never lands in the one window the docs allow for a duplicate (a create answered, its id not yet "
        "written). Besides the figures below, the test compares every stored image byte for byte with what the "
        "gateway serves and opens it as a picture of the right size. "
        f"The test {report.get('outcome', 'did not run')} in {_fmt(report.get('duration_s'), 0)} s; run "
        f"{report['started']}.",
        "",
        "| goal | figure | verdict |",
        "|---|---|---|",
    ]
    misses: list[str] = []
    for goal, figure, held in report["goals"]:
        out.append(f"| {goal} | {figure} | {_held(held)} |")
        if not held:
            misses.append(f"faults mid-batch: {goal} ({figure})")
    if report.get("failure"):
        out += ["", "The test failed:", "", "```text", report["failure"][-1500:], "```"]
    return out, misses


def write_page(
    results: dict[str, Any], out: Path, command: str, template: Path = TEMPLATE, keep: bool = True
) -> list[str]:
    """
    The page from the template and whatever results were given; returns the targets not held.

    Each generated section is written between ``<!-- begin: NAME -->`` and ``<!-- end: NAME -->``
    with the targets it missed; with ``keep``, a section given no results keeps what the page at
    ``out`` already had there (from an earlier run, which the section dates), misses included.
    """
    misses: dict[str, list[str]] = {}
    sections: dict[str, list[str]] = {}
    scale = results.get("trigger_scale")
    if scale:
        lines: list[str] = []
        misses["trigger_scale"] = []
        for part in regime_parts(scale):
            section, missed = scale_section(part)
            lines += [*section, ""]
            misses["trigger_scale"] += [f"{m} ({part['regime']})" if part.get("regime") else m for m in missed]
        plot(regime_parts(scale)[0], out.parent / IMAGE)
        sections["trigger_scale"] = lines
    makers: dict[str, Callable[[Any], tuple[list[str], list[str]]]] = {
        "deployment": deployment_section,
        "batch_scale": batch_scale_section,
        "batch_vs_mapped": batch_vs_mapped_section,
        "batch_faults": batch_faults_section,
    }
    for name, make in makers.items():
        if results.get(name):
            sections[name], misses[name] = make(results[name])
    kept = previous_sections(out) if keep and out.exists() else {}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "misses":
            return MISSES_MARK
        if name in sections:
            body = "\n".join(sections[name]).rstrip()
        elif name in kept:
            body, misses[name] = kept[name]
        else:
            body = f"_No `{name}` results were given to `benchmarks/report.py` for this page; `{FULL}` runs it._"
            misses[name] = []
        return f"<!-- begin: {name} -->\n<!-- misses: {json.dumps(misses[name])} -->\n{body}\n<!-- end: {name} -->"

    text = re.sub(r"\A<!--.*?-->\n", "", template.read_text(), flags=re.DOTALL)
    text = MARKER.sub(fill, text.replace("{{ command }}", command))
    every = [miss for name in misses for miss in misses[name]]
    missed = [f"- {miss}" for miss in every] or ["None: every target above holds."]
    if any("replicate" in miss for miss in every):
        missed += [
            "",
            "What limits the ratio to replicate: the floor itself, per N above. The trigger's CPU per poll is "
            "within 1.5x of the floor at every N; replicate's cost per poll sets the rest.",
        ]
    text = text.replace(MISSES_MARK, "\n".join(missed))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n")
    return every


MISSES_MARK = "\0misses\0"
FULL = "make bench FULL=1"
SECTION = re.compile(
    r"^<!-- begin: (\w+) -->\n<!-- misses: (.*?) -->\n(.*?)\n<!-- end: \1 -->$", re.MULTILINE | re.DOTALL
)


def previous_sections(page: Path) -> dict[str, tuple[str, list[str]]]:
    """The generated sections a page already has: name -> (text, the targets it missed)."""
    return {m.group(1): (m.group(3), list(json.loads(m.group(2)))) for m in SECTION.finditer(page.read_text())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--scale", help="JSON from trigger_scale.py --json")
    p.add_argument("--deployment", help="JSON from deployment_slots.py --json")
    p.add_argument("--batch-scale", nargs="+", default=[], help="JSON from batch_scale.py --json, one per mode")
    p.add_argument("--batch-vs-mapped", help="JSON from batch_vs_mapped.py --json")
    p.add_argument("--batch-faults", help="JSON from batch_faults.py --json")
    p.add_argument("--template", default=str(TEMPLATE), help="the page's template (default benchmarks/page/)")
    p.add_argument("--out", required=True, help="the page to write; the plot goes to img/ beside it")
    p.add_argument("--command", default="make bench FULL=1", help="the command shown as the page's source")
    p.add_argument(
        "--fresh", action="store_true", help="do not keep the sections --out has for benchmarks given no results"
    )
    args = p.parse_args(argv)

    def load(path: str | None) -> Any:
        return json.loads(Path(path).read_text()) if path else None

    results = {
        "trigger_scale": load(args.scale),
        "deployment": load(args.deployment),
        "batch_scale": [load(path) for path in args.batch_scale],
        "batch_vs_mapped": load(args.batch_vs_mapped),
        "batch_faults": load(args.batch_faults),
    }
    misses = write_page(results, Path(args.out), args.command, Path(args.template), keep=not args.fresh)
    print(f"wrote {args.out}" + (f"; targets that do not hold: {misses}" if misses else "; every target holds"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
