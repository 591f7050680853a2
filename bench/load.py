"""Throughput under load: wrk when it is on PATH (a C client that will not be the bottleneck),
else our own bench.loadgen process. Both give the same LoadReport so the table does not care.
"""

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

LUA_SCRIPT = Path(__file__).with_name("wrk_post.lua")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass
class LoadReport:
    tool: str
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    errors: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class LoadFailed(RuntimeError):
    pass


def wrk_path() -> str | None:
    return shutil.which("wrk")


def to_ms(value: str, unit: str) -> float:
    """wrk prints latencies as 812.00us, 1.23ms, 2.01s (and m/h, in theory)."""
    return float(value) * _UNIT_MS[unit]


def parse_wrk(output: str) -> LoadReport:
    """Read req/s, p50/p99, non-2xx and socket errors from `wrk --latency` output."""
    percentiles = {int(p): to_ms(v, u) for p, v, u in _PERCENTILE.findall(output)}
    rps = _RPS.search(output)
    if rps is None or 50 not in percentiles or 99 not in percentiles:
        raise LoadFailed(f"could not read wrk's output:\n{output}")
    total = _TOTAL.search(output)
    non2xx = _NON2XX.search(output)
    socket_errors = _SOCKET_ERRORS.search(output)
    return LoadReport(
        tool="wrk",
        requests=int(total.group(1)) if total else 0,
        rps=float(rps.group(1)),
        p50_ms=percentiles[50],
        p99_ms=percentiles[99],
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        errors=sum(int(n) for n in socket_errors.groups()) if socket_errors else 0,
    )


def _run_wrk(
    wrk: str, url: str, body: str, auth: str, connections: int, seconds: float
) -> LoadReport:
    env = {**os.environ, "BENCH_BODY": body, "BENCH_AUTH": auth}
    cmd = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        url,
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 30)
    if done.returncode != 0:
        raise LoadFailed(f"wrk exited with {done.returncode}: {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


def _run_loadgen(url: str, body: str, auth: str, connections: int, seconds: float) -> LoadReport:
    cmd = [sys.executable, "-m", "bench.loadgen", "--url", url, "--body", body]
    cmd += ["--auth", auth, "-c", str(connections), "-d", str(seconds)]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if done.returncode != 0:
        raise LoadFailed(f"bench.loadgen exited with {done.returncode}: {done.stderr}")
    data = orjson.loads(done.stdout.strip().splitlines()[-1])
    return LoadReport(
        tool="bench.loadgen",
        requests=int(data["requests"]),
        rps=float(data["rps"]),
        p50_ms=float(data["p50_ms"]),
        p99_ms=float(data["p99_ms"]),
        non2xx=int(data["non2xx"]),
        errors=int(data["errors"]),
    )


def measure(
    url: str,
    body: str,
    auth: str,
    *,
    connections: int,
    duration: float,
    warmup: float,
    use_wrk: bool,
    before_measured: Callable[[], None] | None = None,
) -> tuple[LoadReport | None, LoadReport]:
    """(warm-up, measured): a warm-up run first, not reported in the table (pools, TCP, caches
    and the allocator warm up), then `before_measured()`, then the measured run."""
    wrk = wrk_path() if use_wrk else None
    if use_wrk and wrk is None:
        raise LoadFailed("wrk is not on PATH")

    def once(seconds: float) -> LoadReport:
        if wrk is not None:
            return _run_wrk(wrk, url, body, auth, connections, seconds)
        return _run_loadgen(url, body, auth, connections, seconds)

    warm = once(warmup) if warmup > 0 else None
    if before_measured is not None:
        before_measured()
    return warm, once(duration)
