"""Settlements of one account that meet in one batch, joined into one script call
(metering/transport/settle_merge.py): each still applied exactly once with its own reply, the
account's and its keys' counters exact, one top-up request at most; on each server and on a
cluster of each."""

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from decimal import Decimal

import pytest

from gateway.redis_clients import RedisClients, open_clients
from metering.accounts import AccountStore
from metering.admission import Metering, SettlementResult
from metering.payments.outbox import Outbox
from metering.scripts import Scripts, lua_source, settle_source
from metering.transport.batch_calls import Call
from metering.transport.settle_merge import MAX_MERGED, merge_settlements
from metering.usage import UsageRecord, new_generation_id
from ratelimit.store import admission_prelude
from tests.support import usage_record

NOW = time.time()


@dataclass
class Store:
    clients: RedisClients
    accounts: AccountStore
    metering: Metering

    async def settle_at_once(self, records: list[UsageRecord]) -> list[SettlementResult]:
        """All submitted in one turn of the loop, as concurrent requests' settlements are."""
        return await asyncio.gather(*(self.metering.settle(r, NOW) for r in records))

    async def evalsha_calls(self) -> int:
        """Script calls the server(s) ran so far (0 where a cluster hides them)."""
        if self.clients.cluster:
            return 0
        stats = await self.clients.redis.info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


@pytest.fixture
async def store(any_redis_url: str) -> AsyncIterator[Store]:
    clients = await open_clients(any_redis_url, timeout=5.0)
    metering = Metering(
        clients.hot,
        Scripts(clients.hot),
        reservation_timeout=60,
        record_ttl_seconds=3600,
        batcher=clients.batcher,
    )
    yield Store(clients, AccountStore(clients.redis, Scripts(clients.redis)), metering)
    await clients.aclose()


async def _account(store: Store, balance: int) -> tuple[str, str]:
    account = await store.accounts.create_account("c", balance, NOW)
    _, key = await store.accounts.create_key(account.id, "k", NOW)
    return account.id, key.hash


async def test_settlements_of_one_account_in_one_turn_each_apply_once(store: Store) -> None:
    account_id, key_hash = await _account(store, 1_000_000)
    records = [
        usage_record(account_id, key_hash, new_generation_id(account_id), 100 + i)
        for i in range(40)
    ]
    await store.metering.ensure_scripts()  # a first call would meet NOSCRIPT, and be sent again
    calls_before = await store.evalsha_calls()
    results = await store.settle_at_once(records)
    if not store.clients.cluster:  # 40 records: two calls of at most MAX_MERGED
        assert await store.evalsha_calls() - calls_before == -(-40 // MAX_MERGED)
    spent = sum(r.cost for r in records)
    assert all(r.applied for r in results)
    # Each caller is told the balance after its own record, as if it had settled alone.
    assert sorted(r.balance for r in results) == sorted(
        1_000_000 - sum(r.cost for r in records[: i + 1]) for i in range(40)
    )
    state = await store.accounts.get_account(account_id)
    assert state is not None
    assert (state.balance, state.usage, state.reserved) == (1_000_000 - spent, spent, 0)
    again = await store.settle_at_once(records[:5])  # settled before: nothing changes
    assert not any(r.applied for r in again)
    state = await store.accounts.get_account(account_id)
    assert state is not None and state.balance == 1_000_000 - spent


async def test_one_generation_twice_in_one_call_is_charged_once(store: Store) -> None:
    account_id, key_hash = await _account(store, 10_000)
    gid = new_generation_id(account_id)
    record = usage_record(account_id, key_hash, gid, 700)
    results = await store.settle_at_once([record, replace(record, cost=900), record])
    assert sorted(r.applied for r in results) == [False, False, True]
    state = await store.accounts.get_account(account_id)
    assert state is not None and (state.balance, state.usage) == (9_300, 700)


async def test_reservations_and_keys_of_one_call_are_each_exact(store: Store) -> None:
    account_id, first_key = await _account(store, 1_000_000)
    _, second = await store.accounts.create_key(account_id, "second", NOW)
    records = []
    for i in range(12):
        gid = new_generation_id(account_id)
        admitted = await store.metering.admit(account_id, first_key, gid, 5_000, paid=True, now=NOW)
        assert admitted.admitted
        records.append(usage_record(account_id, first_key if i % 3 else second.hash, gid, 10 + i))
    await store.settle_at_once(records)
    state = await store.accounts.get_account(account_id)
    assert state is not None and state.reserved == 0
    for key_hash in (first_key, second.hash):
        key = await store.accounts.get_key(account_id, key_hash, NOW)
        assert key is not None
        own = sum(r.cost for r in records if r.key_hash == key_hash)
        assert (key.usage, key.usage_daily, key.usage_weekly, key.usage_monthly) == (own,) * 4


async def test_a_call_that_crosses_the_top_up_threshold_queues_one_request(store: Store) -> None:
    account_id, key_hash = await _account(store, 1_000)
    outbox = Outbox(store.clients.redis)
    await outbox.set_auto_topup(account_id, Decimal("0.0000005"), Decimal("10"))  # 500 nanos
    records = [
        usage_record(account_id, key_hash, new_generation_id(account_id), 100) for _ in range(8)
    ]
    results = await store.settle_at_once(records)
    assert sum(r.topup_requested for r in results) == 1
    queued = await outbox.pending(account_id)
    assert len(queued) == 1 and queued[0].balance == 200


async def test_joined_calls_survive_a_redis_that_forgot_its_scripts(store: Store) -> None:
    account_id, key_hash = await _account(store, 1_000_000)
    warm = usage_record(account_id, key_hash, new_generation_id(account_id), 1)
    await store.settle_at_once([warm])
    await store.clients.redis.script_flush()  # on a cluster: every master's
    records = [
        usage_record(account_id, key_hash, new_generation_id(account_id), 10) for _ in range(6)
    ]
    results = await store.settle_at_once(records)
    assert all(r.applied for r in results)
    state = await store.accounts.get_account(account_id)
    assert state is not None and state.usage == 61


async def test_a_joined_call_is_never_joined_again() -> None:
    """A batch the batcher could not send at once is merged again on the next flush: a joined
    call must go as it is (joining its first record alone would drop the others)."""

    class Settle:  # as the gateway registers it: with the rate limiter's hooks
        script = lua_source("no_limits") + settle_source()
        sha = "a-settlement"

    loop = asyncio.get_running_loop()

    def one(record: int) -> Call:
        """Record 2 holds a place in flight (one more key, two more arguments)."""
        keys = [f"account-key-{k}" if k else "account" for k in range(7)]
        keys += [f"api-key-{record}", f"generation-{record}"]
        held = ["in-flight"] if record == 2 else []
        args = [
            "ttl",
            "retention",
            "topup",
            "pending",
            f"gen-{record}",
            1,
            "{}",
            0,
            "d",
            "w",
            "m",
            "",
            len(held),
            *(part for _ in held for part in ("c", 0)),
        ]
        return Call(Settle(), keys + held, args, loop.create_future(), None)  # type: ignore[arg-type]

    first = [one(1), one(2), one(3)]
    [joined] = merge_settlements(first)
    assert len(joined.keys) == 7 + 3 * 2 + 1 and len(joined.args) == 4 + 3 * 9 + 2
    assert joined.keys[7:] == [
        "api-key-1",
        "generation-1",
        "api-key-2",
        "generation-2",
        "in-flight",
        "api-key-3",
        "generation-3",
    ]
    again = merge_settlements([joined, one(4), one(5)])
    assert again[0] is joined
    assert [len(call.keys) for call in again] == [14, 11]
    joined.future.set_result([1, "ok", 3, "duplicate", 3, "ok", 1, "4"])
    await asyncio.sleep(0)  # the fan-out runs as the future's callback
    assert [c.future.result() for c in first] == [
        [0, "ok", 3, "4"],
        [0, "duplicate", 3, "4"],
        [1, "ok", 1, "4"],
    ]


async def test_joined_settlements_give_back_what_each_holds_once(any_redis_url: str) -> None:
    """Records with holds (a place in flight, a token true-up) joined in one call: each gives back
    its own, once; the same records again (a replay) give back nothing more."""
    clients = await open_clients(any_redis_url, timeout=5.0)
    try:
        scripts = Scripts(clients.hot, admission_prelude=admission_prelude())
        metering = Metering(
            clients.hot,
            scripts,
            reservation_timeout=60,
            record_ttl_seconds=3600,
            batcher=clients.batcher,
        )
        store = Store(clients, AccountStore(clients.redis, Scripts(clients.redis)), metering)
        account_id, key_hash = await _account(store, 1_000_000)
        tokens = f"gw:{{a:{account_id}}}:rl:t:tpm:1"
        places = f"gw:{{a:{account_id}}}:rl:f:streams"
        records = [
            usage_record(account_id, key_hash, new_generation_id(account_id), 10) for _ in range(12)
        ]
        await clients.redis.set(tokens, 1000, ex=600)
        await clients.redis.zadd(places, {r.id: time.time() * 1000 + 60_000 for r in records})
        held = [(tokens, "t", -7 - i) for i in range(len(records))]
        await metering.ensure_scripts()
        calls_before = await store.evalsha_calls()
        for _ in range(2):  # then a replay of the same settlements
            results = await asyncio.gather(
                *(
                    metering.settle(r, NOW, held=[h, (places, "c", 0)])
                    for r, h in zip(records, held, strict=True)
                )
            )
            assert int(await clients.redis.get(tokens)) == 1000 - sum(7 + i for i in range(12))
            assert await clients.redis.zcard(places) == 0
        assert [r.applied for r in results] == [False] * 12
        if not clients.cluster:
            assert await store.evalsha_calls() - calls_before == 2  # one joined call each time
    finally:
        await clients.aclose()
