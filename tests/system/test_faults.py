"""Faults with real processes under load: Redis stopped and restarted on its append-only file,
Redis killed outright, the gateway killed outright. Afterwards every answered request is settled
exactly once at the cost its client was told, and the books add up (bench/audit.py)."""

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bench.audit import problems, read_books
from bench.crash_loop import RETURN_BOUND_SECONDS, CrashReport, crash_loop
from bench.stack import FREE_MODELS, PAID_MODELS, SLOW_MODEL, Stack
from bench.traffic import NO_ANSWER, Mix, Traffic
from gateway.runtime.redis_server import find_binaries

pytestmark = pytest.mark.skipif(not find_binaries(), reason="no redis-server or valkey-server")

RESERVATION_SECONDS = 2


@pytest.fixture
def appendfsync() -> str:
    return "everysec"


@pytest.fixture
def stack(tmp_path: Path, appendfsync: str) -> Iterator[Stack]:
    s = Stack(
        tmp_path,
        appendfsync=appendfsync,
        gateway_env={"GATEWAY_RESERVATION_TIMEOUT_SECONDS": str(RESERVATION_SECONDS)},
    )
    try:
        yield s.start()
    finally:
        s.stop()


async def _ready(url: str) -> tuple[int, dict[str, object]]:
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            async with session.get(url + "/readyz") as resp:
                return resp.status, await resp.json()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return NO_ANSWER, {"error": type(exc).__name__}


async def _settled(stack: Stack, key: str) -> None:
    """Wait out the journal and the reservation timeout, then let one request release what the
    dead requests still hold (stale reservations go at the account's next admission)."""
    for _ in range(100):
        status, body = await _ready(stack.url)
        if status == 200 and body["journal_pending"] == 0:
            break
        await asyncio.sleep(0.1)
    assert status == 200 and body["journal_pending"] == 0, body
    await asyncio.sleep(RESERVATION_SECONDS + 0.2)
    nudge = Traffic(stack.url, key, Mix(paid_models=PAID_MODELS[1:], stream_share=0), seed=1)
    async with aiohttp.ClientSession() as session:
        await nudge.one(session)
    assert nudge.outcomes[0].status == 200, nudge.outcomes


def _journaled_bytes(directory: Path) -> int:
    total = 0
    for path in directory.glob("settlements-*.jsonl"):
        with contextlib.suppress(FileNotFoundError):  # replayed and removed just now
            total += path.stat().st_size
    return total


def _traffic(stack: Stack, key: str, **kw: object) -> Traffic:
    mix = Mix(paid_models=PAID_MODELS, free_models=FREE_MODELS, free_share=0.2, stream_share=0.3)
    return Traffic(stack.url, key, mix, concurrency=8, **kw)  # type: ignore[arg-type]


async def test_redis_restarted_under_load(stack: Stack) -> None:
    account_id, key = stack.new_account(purchase="20")
    traffic = _traffic(stack, key)
    load = asyncio.create_task(traffic.run(7.0))
    await asyncio.sleep(2.0)
    await asyncio.to_thread(stack.redis.stop)  # SIGTERM: Redis flushes its AOF and exits
    status, body = await _ready(stack.url)
    assert status == 503, body
    assert "redis" in str(body["error"]["message"]), body  # type: ignore[index]
    await asyncio.sleep(1.5)
    await asyncio.to_thread(stack.redis.start)
    back_at = time.monotonic()
    for _ in range(60):
        status, body = await _ready(stack.url)
        if status == 200:
            break
        await asyncio.sleep(0.05)
    reconnected = time.monotonic() - back_at
    assert status == 200 and reconnected < 2.0, (reconnected, body)
    outcomes = await load
    await _settled(stack, key)

    during = [o for o in outcomes if o.status not in (200, 429)]
    assert all(o.status == 503 for o in during), {o.status for o in during}
    assert NO_ANSWER not in {o.status for o in outcomes}  # never a hang, never a dropped client
    assert any(o.status == 503 for o in outcomes), "the outage was not seen"
    assert sum(o.status == 200 for o in outcomes) > 50
    books = await read_books(stack.url, stack.admin_token, account_id, key)
    assert problems(books, outcomes) == []


@pytest.mark.parametrize("appendfsync", ["always"])
async def test_redis_killed_with_appendfsync_always_loses_no_acknowledged_settlement(
    stack: Stack,
) -> None:
    account_id, key = stack.new_account(purchase="20")
    traffic = _traffic(stack, key)
    load = asyncio.create_task(traffic.run(5.0))
    await asyncio.sleep(2.0)
    await asyncio.to_thread(stack.kill_redis)  # SIGKILL: nothing is flushed on the way out
    await asyncio.sleep(1.0)
    await asyncio.to_thread(stack.redis.start)
    outcomes = await load
    await _settled(stack, key)

    answered = [o for o in outcomes if o.status == 200]
    assert len(answered) > 50
    books = await read_books(stack.url, stack.admin_token, account_id, key)
    assert problems(books, outcomes) == []  # every answer the clients got is on the books


async def test_gateway_killed_mid_load_with_settlements_in_its_journal(stack: Stack) -> None:
    account_id, key = stack.new_account(purchase="20")
    traffic = _traffic(stack, key, request_timeout=5.0)
    load = asyncio.create_task(traffic.run(4.0))
    # Slow answers are surely in flight when Redis goes: their settlements go to the journal.
    slow = Traffic(stack.url, key, Mix(paid_models=[SLOW_MODEL], stream_share=0), concurrency=4)
    slow_load = asyncio.create_task(slow.run(0.5))
    await asyncio.sleep(1.0)
    await asyncio.to_thread(stack.kill_redis)
    journals = stack.workdir / "data"
    slow_outcomes = await asyncio.wait_for(slow_load, 15)  # answered, settled into the journal
    assert any(o.status == 200 for o in slow_outcomes), slow_outcomes
    assert _journaled_bytes(journals) > 0
    await asyncio.to_thread(stack.kill_gateway)  # SIGKILL, with its journal not yet replayed
    outcomes = [*await load, *slow_outcomes]
    await asyncio.to_thread(stack.redis.start)
    await asyncio.to_thread(stack.start_gateway)  # replays the dead process's journal
    await _settled(stack, key)

    books = await read_books(stack.url, stack.admin_token, account_id, key)
    assert problems(books, outcomes) == []
    assert _journaled_bytes(journals) == 0
    replayed = [line for line in stack.gateway_logs() if "replayed" in line]
    assert replayed, "the new process did not say it replayed the journal"


async def test_redis_killed_again_and_again_leaves_nothing_reserved(tmp_path: Path) -> None:
    """An admission whose reply was lost with the crash (Redis may have run and kept it) was
    answered 503 and will never settle: its reservation is given back once Redis answers again,
    with the reservation timeout at its 900 s default, and the purchase stays refundable. The
    same loop runs 30 kills in `make soak`."""
    report = CrashReport()
    await crash_loop(tmp_path, 3, report)
    assert report.problems == []
    assert report.kills == 3 and report.refund_status == 200
    assert report.refused_503 > 0 and report.answered > 100  # the crash was seen under load
    assert max(report.returned_after) < RETURN_BOUND_SECONDS
