"""`python -m bench.open_streams --streams 1000`: memory per open stream, the gateway's against the
bare proxy's, in one run.

Starts what `make bench` starts (Redis, the simulated provider, the bare aiohttp proxy, `gateway
serve`), then for each proxy: its resident memory, then N streams opened and held (the simulated
provider's `sim-hold` sends one event a second), its memory with all N open, and its memory a few
seconds after they all closed (is it given back?). Memory per open stream is the difference over
N. With `--gateway-workers 2` the gateway's memory is that of all its processes. Every socket of a
stream is two file descriptors in the proxy (the client's and the provider's): 10,000 streams
need a hard open-file limit above 20,000 in one worker, or two workers (`--only gateway` then: the
bare proxy is one process). `--side-load S` also loads the proxy with ordinary (not streamed)
requests for S seconds (wrk, 8 connections) before the streams open and again while they are all
held: what the held streams cost everyone else's throughput.
"""

import argparse
import asyncio
import contextlib
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp

from bench import load, new_event_loop
from bench.procs import cpu_seconds
from bench.run import Bench, log
from bench.scenario import (
    HOLD_MODEL,
    PAID_MODEL,
    TICK_MODEL,
    TICK_UPSTREAM,
    UPSTREAM_MODEL,
    chat_body,
)
from bench.stack import rss_bytes

OPEN_AT_ONCE = 200  # streams opened concurrently, wave after wave
SETTLE_SECONDS = 15.0  # a burst's end to its RSS: the gateway gives memory back after 5 s idle
RELAY_SECONDS = 5.0  # held streams' events, counted for CPU per relayed event


def _family_rss(pid: int) -> int:
    """The process's memory and its children's (a gateway's workers)."""
    total = rss_bytes(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                total += rss_bytes(int(stat.parent.name))
    return total


class Opening:
    """How many streams are open end to end (their first event came), or failed to open."""

    def __init__(self) -> None:
        self.gate = asyncio.Semaphore(OPEN_AT_ONCE)
        self.open = 0
        self.failed = 0
        self.events = 0  # events the held streams received
        self.why: dict[str, int] = {}  # what the streams that did not open met

    def fail(self, why: str) -> bool:
        self.failed += 1
        self.why[why] = self.why.get(why, 0) + 1
        return False


async def _hold(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    opening: Opening,
    release: asyncio.Event,
) -> bool:
    async with opening.gate:
        try:
            resp = await session.post(url, json=body, headers=headers)
        except aiohttp.ClientError as exc:
            return opening.fail(type(exc).__name__)
        if resp.status != 200:
            why = f"{resp.status}: {(await resp.text())[:120]}"
            resp.release()
            return opening.fail(why)
        await resp.content.readany()  # the first event: the stream is open end to end
        opening.open += 1
    try:
        async with asyncio.timeout(600):
            while not release.is_set():
                piece = await resp.content.readany()
                if not piece:
                    return True
                opening.events += piece.count(b"\n\n")
    finally:
        resp.close()
    return True


SideLoad = Callable[[], Awaitable[float]]


def side_load(url: str, model: str, auth: str, seconds: float) -> SideLoad:
    """req/s of ordinary requests to `url` over `seconds` (wrk in a thread: the streams held by
    this loop go on being read meanwhile)."""

    async def run() -> float:
        measure = partial(
            load.measure,
            url,
            chat_body(model).decode(),
            auth,
            connections=8,
            duration=seconds,
            warmup=1.0,
            use_wrk=load.wrk_path() is not None,
        )
        _, report = await asyncio.get_running_loop().run_in_executor(None, measure)
        return float(report.rps)

    return run


async def measure(
    url: str,
    model: str,
    auth: str,
    pid: int,
    streams: int,
    side: SideLoad | None = None,
    hold: float = RELAY_SECONDS,
    settle: float = SETTLE_SECONDS,
) -> dict[str, Any]:
    """One burst: N streams opened, held for RELAY_SECONDS, closed; memory and CPU a relayed
    event (the proxy's CPU over the window, divided by the events the streams received)."""
    headers = {"Authorization": auth} if auth else {}
    body = {"model": model, "messages": [{"role": "user", "content": "hold"}], "stream": True}
    side_before = await side() if side is not None else None
    before = _family_rss(pid)
    release = asyncio.Event()
    opening = Opening()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [
            asyncio.ensure_future(_hold(session, url, body, headers, opening, release))
            for _ in range(streams)
        ]
        started = time.monotonic()
        for _ in range(600):  # every stream open (or failed), within two minutes
            if opening.open + opening.failed >= streams:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        held = _family_rss(pid)
        open_seconds = time.monotonic() - started
        cpu_before, events_before = cpu_seconds(pid), opening.events
        await asyncio.sleep(hold)
        relayed = opening.events - events_before
        per_event = (cpu_seconds(pid) - cpu_before) * 1e6 / max(relayed, 1)
        side_during = await side() if side is not None else None
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(settle)
    after = _family_rss(pid)
    ok = opening.open
    assert all(r is True or r is False for r in results), results[:3]
    return {
        "streams": streams,
        "ok": ok,
        "open_seconds": round(open_seconds, 1),
        "rss_before_mb": round(before / 2**20, 1),
        "rss_open_mb": round(held / 2**20, 1),
        "rss_after_mb": round(after / 2**20, 1),
        "kb_per_stream": round((held - before) / 1024 / max(ok, 1), 1),
        "failed": opening.why,
        "cpu_us_per_event": round(per_event, 1),
        "events_per_second": round(relayed / hold),
        "side_rps_before": side_before,
        "side_rps_held": side_during,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.open_streams", description=__doc__)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--gateway-workers", type=int, default=1)
    parser.add_argument("--only", choices=("bare", "gateway"), help="one proxy, not both")
    parser.add_argument("--side-load", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument(
        "--rate", type=int, choices=(1, 10), default=1, help="events a second a stream"
    )
    parser.add_argument("--bursts", type=int, default=1, help="open and close them N times")
    parser.add_argument(
        "--hold", type=float, default=RELAY_SECONDS, help="seconds they are held and measured"
    )
    parser.add_argument(
        "--settle", type=float, default=SETTLE_SECONDS, help="seconds from a burst's end to RSS"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure both proxies in turn N times (medians)"
    )
    args = parser.parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # this client holds every stream
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    args.redis_socket, args.gateway_env = "tcp", []
    with tempfile.TemporaryDirectory(prefix="gateway-streams-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            bench.start()
            rows = _run_all(bench, args)
        finally:
            bench.stop()
    _report(rows, args)
    return 0


def _run_all(bench: Bench, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Each proxy's bursts, round after round (the two in turn, so that a neighbour's load
    falls on both alike)."""
    loop = new_event_loop()
    rows: dict[str, list[dict[str, Any]]] = {}
    held = (HOLD_MODEL, "sim-hold") if args.rate == 1 else (TICK_MODEL, TICK_UPSTREAM)
    try:
        for _ in range(args.rounds):
            for name, base, models, auth in (
                ("bare", bench.bare_url, (held[1], UPSTREAM_MODEL), ""),
                ("gateway", bench.gateway_url, (held[0], PAID_MODEL), bench.auth),
            ):
                if args.only not in (None, name):
                    continue
                url = f"{base}/api/v1/chat/completions"
                pid = next(c.pid for c in bench.children if c.name == name)
                side = side_load(url, models[1], auth, args.side_load) if args.side_load else None
                for burst in range(args.bursts):
                    log(f"{name}: opening {args.streams} streams (burst {burst + 1})")
                    row = loop.run_until_complete(
                        measure(
                            url, models[0], auth, pid, args.streams, side, args.hold, args.settle
                        )
                    )
                    rows.setdefault(name, []).append(row)
    finally:
        loop.close()
    return rows


def _report(rows: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    each = "one event a second" if args.rate == 1 else f"{args.rate} events a second"
    print(f"\n== {args.streams} open streams, held ({each} each) ==")
    for name, found in rows.items():
        for row in found:
            print(
                f"  {name:<8} {row['ok']} open in {row['open_seconds']} s: RSS "
                f"{row['rss_before_mb']} -> {row['rss_open_mb']} MB open "
                f"({row['kb_per_stream']} KB a stream) -> {row['rss_after_mb']} MB "
                f"{args.settle:g} s after they closed; {row['cpu_us_per_event']} µs of CPU a "
                f"relayed event while held ({row['events_per_second']} events/s)"
            )
            if row["failed"]:
                print(f"           did not open: {row['failed']}")
            if row["side_rps_before"] is not None:
                print(
                    f"           ordinary requests beside them: {row['side_rps_before']:.0f} "
                    f"req/s before, {row['side_rps_held']:.0f} req/s with all {row['ok']} held"
                )
    if "bare" in rows and "gateway" in rows:
        bare = statistics.median(r["cpu_us_per_event"] for r in rows["bare"])
        gateway = statistics.median(r["cpu_us_per_event"] for r in rows["gateway"])
        print(
            f"  CPU a relayed event, medians: gateway {gateway:.1f} µs, bare proxy {bare:.1f} µs: "
            f"{gateway / max(bare, 0.1):.2f}x"
        )


if __name__ == "__main__":
    sys.exit(main())
