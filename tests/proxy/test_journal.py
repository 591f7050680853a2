"""Redis unreachable at settlement: the charge is journaled (fsync'd) and replayed once Redis is
back, exactly once."""

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.app import create_app
from gateway.proxy.settle.journal import JOURNAL, SettlementJournal
from gateway.runtime.redis_server import RedisServer, free_port
from gateway.state import SERVICES
from metering.accounts import AccountStore, hash_secret
from metering.admission import Metering
from metering.scripts import Scripts
from metering.usage import UsageRecord
from tests.support import (
    ThreadedServer,
    account_state,
    bearer,
    chat,
    make_settings,
    new_account,
    usage_record,
)


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", port=free_port(), appendfsync="always").start()
    yield server
    server.stop()


@pytest.fixture
async def own_metering(own_redis: RedisServer) -> AsyncIterator[tuple[Redis, Scripts, Metering]]:
    """The metering a replay settles through, on that Redis, without a gateway."""
    redis = Redis.from_url(own_redis.url, decode_responses=True)
    scripts = Scripts(redis)
    metering = Metering(
        redis, scripts, reservation_timeout=60, record_ttl_seconds=3600, timeout=5.0
    )
    yield redis, scripts, metering
    await redis.aclose()


def _app(
    own_redis: RedisServer, provider: ThreadedServer, tmp_path: Path, **kw: Any
) -> web.Application:
    return create_app(make_settings(own_redis.url, provider.url, data_dir=tmp_path / "data", **kw))


async def test_a_settlement_that_cannot_reach_redis_is_replayed_once(
    own_redis: RedisServer, provider: ThreadedServer, tmp_path: Path
) -> None:
    app = _app(own_redis, provider, tmp_path, journal_replay_seconds=0.1, redis_timeout_seconds=0.5)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        account_id, key = await new_account(c, purchase="1.00")
        call = asyncio.ensure_future(
            c.post("/api/v1/chat/completions", json=chat("test/slow"), headers=bearer(key))
        )
        await asyncio.sleep(1.0)  # admitted; the provider takes 3 s to answer
        own_redis.stop()  # Redis goes away before the settlement
        resp = await call
        assert resp.status == 200  # the client got its answer and its cost
        cost = Decimal(str((await resp.json())["usage"]["cost"]))
        journal = c.app[JOURNAL]
        assert journal.pending() == 1
        own_redis.start()  # back, on the same append-only file
        for _ in range(100):
            if journal.pending() == 0:
                break
            await asyncio.sleep(0.1)
        assert journal.pending() == 0
        state = await account_state(c, account_id)
        assert Decimal(state["balance"]) == Decimal("1.00") - cost
        assert state["reserved"] == "0.00"
        record = await c.app[SERVICES].metering.generation(
            account_id, resp.headers["X-Generation-Id"]
        )
        assert record is not None
        # Replaying the same settlement again changes nothing.
        journal.append(UsageRecord.from_json(record.to_json()), 0)
        assert await journal.replay(c.app[SERVICES].metering) == 0
        assert Decimal((await account_state(c, account_id))["balance"]) == Decimal("1.00") - cost


async def test_a_hung_redis_is_a_503_within_the_admission_bound(
    own_redis: RedisServer, provider: ThreadedServer, tmp_path: Path
) -> None:
    app = _app(own_redis, provider, tmp_path, key_cache_seconds=600, admission_timeout_seconds=0.25)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        account_id, key = await new_account(c, purchase="1.00")
        assert (
            await c.post("/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key))
        ).status == 200
        assert own_redis.process is not None
        os.kill(own_redis.process.pid, signal.SIGSTOP)  # Redis hangs: no answer, no refusal
        try:
            started = time.monotonic()
            resp = await c.post(
                "/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key)
            )
            elapsed = time.monotonic() - started
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)
        assert resp.status == 503
        assert elapsed < 1.0
        # The admission script may run after the gateway gave up on it (it is still written once
        # Redis answers): what it reserved is given back at once, not at the reservation's
        # expiry. Nothing is held for a whole second within the next five.
        held_off_since: float | None = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if (await account_state(c, account_id))["reserved"] != "0.00":
                held_off_since = None
            elif held_off_since is None:
                held_off_since = time.monotonic()
            elif time.monotonic() - held_off_since >= 1.0:
                break
            await asyncio.sleep(0.05)
        assert held_off_since is not None and time.monotonic() - held_off_since >= 1.0


async def test_a_settlement_is_journaled_while_a_replay_waits_on_redis(
    own_redis: RedisServer, own_metering: tuple[Redis, Scripts, Metering], tmp_path: Path
) -> None:
    """A replay waiting on a hung Redis must not hold up a new journal entry: the append is
    synchronous, so waiting there would stop the event loop the replay itself needs."""
    _, _, metering = own_metering
    journal = SettlementJournal(tmp_path / "journal")
    journal.append(usage_record("acct", "kh", "gen-acct-1", 100), 1.0)
    assert own_redis.process is not None
    os.kill(own_redis.process.pid, signal.SIGSTOP)  # the replay's settlement now waits
    try:
        replay = asyncio.ensure_future(journal.replay(metering))
        await asyncio.sleep(0.3)
        assert not replay.done()
        append = asyncio.ensure_future(
            asyncio.to_thread(journal.append, usage_record("acct", "kh", "gen-acct-2", 100), 2.0)
        )
        await asyncio.wait({append}, timeout=3.0)
        assert append.done(), "a new settlement waited for a replay that waits for Redis"
        assert not replay.done()
        assert journal.pending() == 2
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
    await replay


async def test_two_processes_replaying_one_journal_settle_each_line_once(
    own_metering: tuple[Redis, Scripts, Metering], tmp_path: Path
) -> None:
    """Workers share the data directory: whichever locks a dead process's journal (or a batch)
    first replays it, the other finds it gone or busy and carries on; a torn line is set aside,
    not a reason to stop."""
    redis, scripts, metering = own_metering
    account = await AccountStore(redis, scripts).create_account("j", 10**9, 1.0)
    directory = tmp_path / "journal"
    first, second = SettlementJournal(directory), SettlementJournal(directory)
    second.path = directory / "settlements-999999999.jsonl"  # a process that is gone
    for n in range(40):
        (first if n % 2 else second).append(usage_record(account.id, "kh", f"g-{n}", 1000), 1.0)
    with second.path.open("ab") as torn:
        torn.write(b'{"record": "{\\"id\\": \n')
    second.path = directory / "settlements-1.jsonl"  # the second replayer: a live process
    results = await asyncio.gather(first.replay(metering), second.replay(metering))
    results += (await first.replay(metering),)
    assert sum(results) == 40
    assert first.pending() == 0
    state = await AccountStore(redis, scripts).get_account(account.id)
    assert state is not None and state.usage == 40 * 1000
    assert (directory / "unreadable-settlements.jsonl").read_bytes().count(b"\n") == 1


async def test_a_release_that_cannot_reach_redis_waits_in_the_journal(
    own_redis: RedisServer, provider: ThreadedServer, tmp_path: Path
) -> None:
    """An admission whose reply was lost holds a reservation no request will settle: its
    release waits in the journal while Redis is away, is applied once it answers, and a second
    replay of it gives nothing back twice."""
    app = _app(own_redis, provider, tmp_path, journal_replay_seconds=3600)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        account_id, key = await new_account(c, purchase="1.00")
        metering, journal = c.app[SERVICES].metering, c.app[JOURNAL]
        key_hash = hash_secret(key)
        admitted = await metering.admit(
            account_id, key_hash, f"gen-{account_id}-lost", 5_000, paid=True, now=time.time()
        )
        assert admitted.admitted and (await account_state(c, account_id))["reserved"] != "0.00"
        own_redis.stop()
        journal.append_release(account_id, f"gen-{account_id}-lost")
        assert journal.pending() == 1
        with pytest.raises(RedisError):
            await journal.replay(metering, time.time())
        assert journal.pending() == 1  # kept for the next pass
        own_redis.start()
        assert await journal.replay(metering, time.time()) == 0  # no settlement among them
        assert journal.pending() == 0
        assert (await account_state(c, account_id))["reserved"] == "0.00"
        journal.append_release(account_id, f"gen-{account_id}-lost")
        await journal.replay(metering, time.time())
        state = await account_state(c, account_id)
        assert state["reserved"] == "0.00" and state["balance"] == "1.00"
        # A late admission of the same id (its command reached Redis after all) takes nothing.
        late = await metering.admit(
            account_id, key_hash, f"gen-{account_id}-lost", 5_000, paid=True, now=time.time()
        )
        assert late.admitted and (await account_state(c, account_id))["reserved"] == "0.00"


async def test_a_slow_answer_keeps_its_reservation(
    own_redis: RedisServer, provider: ThreadedServer, tmp_path: Path
) -> None:
    """A request still being answered renews its reservation, streamed or not: were it dropped
    as if its gateway had died, a racing request could spend the same credit."""
    app = _app(own_redis, provider, tmp_path, reservation_timeout_seconds=1)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        account_id, key = await new_account(c, grant="0.003")  # one worst case of test/slow
        slow = asyncio.ensure_future(
            c.post("/api/v1/chat/completions", json=chat("test/slow"), headers=bearer(key))
        )
        await asyncio.sleep(2.2)  # admitted, and past the reservation timeout twice over
        racing = await c.post(
            "/api/v1/chat/completions", json=chat("test/slow"), headers=bearer(key)
        )
        assert racing.status == 402, await racing.text()
        assert (await slow).status == 200
        state = await account_state(c, account_id)
        assert state["reserved"] == "0.00" and Decimal(state["balance"]) > 0
