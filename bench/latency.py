"""Latency without load: sequential requests, one keep-alive connection per target, so every
figure is one request's own path through the stack and nothing queues behind anything else.

The targets take turns in blocks of BLOCK requests rather than one whole run after the other: on
a small VM, wake-up costs drift over seconds, and taking turns spreads that drift over every
target instead of handing it to whichever ran at the wrong moment. Within a block the requests
are back to back, as a lone client would send them (turns of single requests would let every
process fall idle between its requests and measure vCPU wake-ups more than the stack).

Measured from this (orchestrator) process with aiohttp; the client's own cost is the same for
every target, so differences between targets are what the hops in between add.
"""

import statistics
import time
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp

BLOCK = 25


@dataclass
class SequentialReport:
    requests: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    url: str
    body: bytes
    headers: dict[str, str]


class LatencyFailed(RuntimeError):
    pass


def _report(samples: list[float]) -> SequentialReport:
    ms = sorted(s * 1000 for s in samples)

    def pick(fraction: float) -> float:
        return ms[min(len(ms) - 1, max(0, round(fraction * len(ms)) - 1))]

    return SequentialReport(len(ms), pick(0.5), pick(0.9), pick(0.99), statistics.fmean(ms))


def _session() -> aiohttp.ClientSession:
    """One connection, kept alive: the unloaded path, with no connect or pool wait in it."""
    connector = aiohttp.TCPConnector(limit=1, keepalive_timeout=60)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))


async def _whole_answer(session: aiohttp.ClientSession, t: Target) -> float:
    """Seconds from sending a non-streaming request to having all of its answer."""
    started = time.perf_counter()
    async with session.post(t.url, data=t.body, headers=t.headers) as resp:
        payload = await resp.read()
        if resp.status != 200:
            raise LatencyFailed(f"{t.url} answered {resp.status}: {payload[:300]!r}")
    return time.perf_counter() - started


async def _first_byte(session: aiohttp.ClientSession, t: Target) -> float:
    """Seconds from sending a streaming request to the first byte of its body (not the headers,
    which a proxy may send before it has anything to say); the rest is read and checked."""
    started = time.perf_counter()
    async with session.post(t.url, data=t.body, headers=t.headers) as resp:
        if resp.status != 200:
            raise LatencyFailed(f"{t.url} answered {resp.status}: {await resp.read()!r}")
        first = await resp.content.readany()
        first_at = time.perf_counter()
        rest = await resp.content.read()
    if not first or b"[DONE]" not in first + rest:
        raise LatencyFailed(f"{t.url}: stream ended without data: [DONE]")
    return first_at - started


async def take_turns(
    targets: dict[str, Target], *, count: int, warmup: int, streaming: bool
) -> dict[str, SequentialReport]:
    """`warmup` untimed requests to each target, then `count` timed ones to each, one at a time,
    the targets taking turns every BLOCK requests."""
    measure = _first_byte if streaming else _whole_answer
    samples: dict[str, list[float]] = {name: [] for name in targets}
    async with AsyncExitStack() as stack:
        sessions = {name: await stack.enter_async_context(_session()) for name in targets}
        for name, target in targets.items():
            for _ in range(warmup):
                await measure(sessions[name], target)
        for start in range(0, count, BLOCK):
            for name, target in targets.items():
                for _ in range(min(BLOCK, count - start)):
                    samples[name].append(await measure(sessions[name], target))
    return {name: _report(values) for name, values in samples.items()}
