"""How many prediction polls per second the emulator answers on one CPU core.

Starts ``cometapi-emulator`` (pinned to one CPU), creates K predictions that stay in flight,
then polls ``GET /replicate/v1/predictions/{id}`` round-robin from an aiohttp client (pinned to
another CPU) at concurrency C for T seconds:

    .venv/bin/python benchmarks/emulator_throughput.py --predictions 1000 --concurrency 64 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from _shared import percentile, pin  # beside this script
from yarl import URL

from airflow_provider_cometapi.emulator.testing import EmulatorProcess


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


async def _create_all(session: aiohttp.ClientSession, base: str, count: int, concurrency: int) -> list[str]:
    url = f"{base}/replicate/v1/models/black-forest-labs/flux-schnell/predictions"
    ids: list[str] = []
    todo = iter(range(count))

    async def worker() -> None:
        for i in todo:
            async with session.post(url, json={"input": {"prompt": f"benchmark image {i}", "seed": i}}) as resp:
                body = await resp.json()
                if resp.status != 201:
                    raise RuntimeError(f"create answered {resp.status}: {body}")
                ids.append(body["id"])

    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    return ids


async def _poll(
    session: aiohttp.ClientSession,
    raw: list[RawClient] | None,
    urls: list[URL],
    concurrency: int,
    seconds: float,
    tally: Tally | None,
) -> int:
    """Poll round-robin until the deadline; returns the number of polls sent."""
    ring = itertools.cycle(urls)
    deadline = time.perf_counter() + seconds
    sent = 0

    async def worker(n: int) -> None:
        nonlocal sent
        perf = time.perf_counter
        client = raw[n] if raw is not None else None
        while perf() < deadline:
            url = next(ring)
            start = perf()
            ok = False
            try:
                if client is not None:
                    status, _ = await client.get(url.raw_path)
                    ok = status == 200
                else:
                    async with session.get(url) as resp:
                        await resp.read()
                        ok = resp.status == 200
            except (aiohttp.ClientError, asyncio.IncompleteReadError, ConnectionError, ValueError):
                pass
            sent += 1
            if tally is not None:
                tally.latencies.append(perf() - start)
                if not ok:
                    tally.errors += 1

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return sent


class RawClient:
    """Keep-alive HTTP/1.1 over plain asyncio streams: far cheaper per request than aiohttp, so
    the load generator (one core) does not become the bottleneck it measures."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host = host
        self.port = port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        request = f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.extra}\r\n"
        self.writer.write(request.encode())
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            body = await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            await self.close()
            raise
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _cpu_seconds(pid: int) -> float | None:
    """User+system CPU time of ``pid`` from /proc (Linux); None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _run(emu: EmulatorProcess, args: argparse.Namespace) -> Tally:
    connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=args.concurrency)
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    # No cookie jar, no decompression: the load generator should spend its CPU on requests.
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
    ) as session:
        started = time.perf_counter()
        ids = await _create_all(session, emu.base_url, args.predictions, args.concurrency)
        took = time.perf_counter() - started
        print(f"created {len(ids)} predictions in {took:.2f} s ({len(ids) / took:.0f}/s)")
        # Pre-parsed URLs spare the client a parse per request.
        urls = [URL(f"{emu.base_url}/replicate/v1/predictions/{pid}", encoded=True) for pid in ids]
        raw: list[RawClient] | None = None
        if args.client == "raw":
            assert emu.port is not None
            raw = [RawClient("127.0.0.1", emu.port, headers) for _ in range(args.concurrency)]
        if args.warmup > 0:
            await _poll(session, raw, urls, args.concurrency, args.warmup, None)
        tally = Tally()
        assert emu.pid is not None
        server_cpu = _cpu_seconds(emu.pid)
        client_cpu = time.process_time()
        started = time.perf_counter()
        await _poll(session, raw, urls, args.concurrency, args.seconds, tally)
        tally_time = time.perf_counter() - started
        client_busy = (time.process_time() - client_cpu) / tally_time
        server_end = _cpu_seconds(emu.pid)
        for client in raw or ():
            await client.close()
    polls = len(tally.latencies)
    lat = sorted(tally.latencies)
    print(
        f"polls: {polls} in {tally_time:.2f} s = {polls / tally_time:.0f} polls/s; "
        f"latency p50 {percentile(lat, 0.5) * 1000:.2f} ms, p95 {percentile(lat, 0.95) * 1000:.2f} ms, "
        f"mean {statistics.fmean(lat) * 1000 if lat else float('nan'):.2f} ms; errors {tally.errors}"
    )
    if server_cpu is not None and server_end is not None:
        print(
            f"CPU busy during the measurement: emulator {(server_end - server_cpu) / tally_time:.0%}, "
            f"load generator {client_busy:.0%}"
        )
    return tally


def _runner() -> Callable[[Coroutine[Any, Any, Tally]], Tally]:
    """uvloop for the load generator too when it is installed: the client needs the CPU more."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--predictions", type=int, default=1000, help="predictions in flight (default 1000)")
    p.add_argument("--concurrency", type=int, default=64, help="concurrent polls (default 64)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured polling time (default 10)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured polling first (default 1)")
    p.add_argument(
        "--client",
        choices=("aiohttp", "raw"),
        default="aiohttp",
        help="aiohttp.ClientSession (default) or a minimal keep-alive HTTP/1.1 client that needs less "
        "CPU, to find the emulator's own limit",
    )
    p.add_argument(
        "--emulator-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for the emulator, repeatable (e.g. --emulator-arg=--loop=asyncio)",
    )
    p.add_argument("--server-cpu", type=int, default=0, help="CPU for the emulator (default 0)")
    p.add_argument("--client-cpu", type=int, default=1, help="CPU for this load generator (default 1)")
    args = p.parse_args(argv)

    # Long duration: every prediction stays `processing` for the whole run.
    with EmulatorProcess(api_key="bench-key", duration=3600.0, starting_for=0.0, extra_args=args.emulator_arg) as emu:
        assert emu.pid is not None
        pinned_server = pin(emu.pid, args.server_cpu)
        pinned_client = pin(0, args.client_cpu)
        print(
            f"emulator pid {emu.pid} at {emu.base_url}; CPUs available {os.cpu_count()}; "
            f"server on CPU {args.server_cpu if pinned_server else 'any'}, "
            f"client on CPU {args.client_cpu if pinned_client else 'any'}; "
            f"{args.predictions} predictions, concurrency {args.concurrency}, {args.seconds:g} s"
        )
        tally = _runner()(_run(emu, args))
        stats = emu.stats(detail=False)
        print(f"emulator counters: creates {stats['creates']}, polls {stats['polls']}, requests {stats['requests']}")
    return 1 if tally.errors else 0


if __name__ == "__main__":
    sys.exit(main())
