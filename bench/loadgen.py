"""The fallback load generator, used when wrk is not on PATH: N keep-alive connections, each
sending the same POST back to back for D seconds, recording every latency.

It runs in its own process (as wrk would) so it never shares an event loop with what it measures.
Being Python, it is slower than wrk: with it, req/s figures are a lower bound for every target.
Prints one JSON object (see LoadReport in bench/load.py) on stdout.

Usage: python -m bench.loadgen --url URL --body JSON [--auth 'Bearer k'] -c 32 -d 10
"""

import argparse
import asyncio
import sys
import time

import aiohttp
import orjson

from bench import new_event_loop


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


async def _worker(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    deadline: float,
    latencies: list[float],
    counts: dict[str, int],
) -> None:
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if not 200 <= resp.status < 400:
                    counts["non2xx"] += 1
        except (aiohttp.ClientError, TimeoutError):
            counts["errors"] += 1
            await asyncio.sleep(0.01)  # do not spin on a dead target
            continue
        latencies.append(time.perf_counter() - started)


async def run_load(
    url: str, body: bytes, auth: str, connections: int, duration: float
) -> dict[str, float | int | str]:
    # Several "Bearer ..." values separated by "|": each connection takes one in turn.
    auths = auth.split("|") if auth else [""]
    each = [
        {"Content-Type": "application/json", **({"Authorization": a} if a else {})} for a in auths
    ]
    latencies: list[float] = []
    counts = {"non2xx": 0, "errors": 0}
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        deadline = started + duration
        await asyncio.gather(
            *(
                _worker(session, url, body, each[n % len(each)], deadline, latencies, counts)
                for n in range(connections)
            )
        )
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "tool": "bench.loadgen",
        "requests": len(latencies),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "non2xx": counts["non2xx"],
        "errors": counts["errors"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True)
    parser.add_argument("--auth", default="")
    parser.add_argument("-c", "--connections", type=int, default=32)
    parser.add_argument("-d", "--duration", type=float, default=10.0)
    args = parser.parse_args()
    loop = new_event_loop()
    try:
        report = loop.run_until_complete(
            run_load(args.url, args.body.encode(), args.auth, args.connections, args.duration)
        )
    finally:
        loop.close()
    sys.stdout.write(orjson.dumps(report).decode() + "\n")


if __name__ == "__main__":
    main()
