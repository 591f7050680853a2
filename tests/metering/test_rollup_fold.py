"""The Activity rollups folded from the usage stream: every settled record counted exactly once,
whichever process folds and however many fold at once; records written before the fold existed
(rolled up by their own settlement) never counted twice; nothing trimmed before it is counted.
On each server this machine has, and on a cluster of each."""

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest

from gateway.redis_clients import store_client
from metering.accounts import AccountStore
from metering.admission import Metering
from metering.layout import AccountKeys
from metering.rollup_fold import RollupFold
from metering.rollups import Rollups, Totals, bucket_start
from metering.scripts import Scripts
from metering.transport.client import AnyRedis
from metering.usage import new_generation_id
from tests.support import usage_record

NOW = time.time()


@dataclass
class Store:
    redis: AnyRedis
    accounts: AccountStore
    metering: Metering
    fold: RollupFold
    rollups: Rollups

    def second_process(self) -> RollupFold:
        """Another gateway's fold: its own scripts, its own idea of what is marked."""
        return RollupFold(Scripts(self.redis))


@pytest.fixture
async def store(any_redis_url: str) -> AsyncIterator[Store]:
    redis = store_client(any_redis_url)
    scripts = Scripts(redis)
    fold = RollupFold(scripts)
    metering = Metering(redis, scripts, reservation_timeout=60, record_ttl_seconds=1, fold=fold)
    yield Store(redis, AccountStore(redis, scripts), metering, fold, Rollups(redis, fold))
    await redis.aclose()


async def settle_records(store: Store, account_id: str, key_hash: str, count: int) -> int:
    """`count` records over three models, cost 7 + i each: what they cost in all."""
    total = 0
    for i in range(count):
        record = replace(
            usage_record(account_id, key_hash, new_generation_id(account_id), 7 + i),
            model=f"m{i % 3}",
            tokens_prompt=i,
        )
        assert (await store.metering.settle(record, NOW)).applied
        total += 7 + i
    return total


async def day_totals(store: Store, account_id: str) -> Totals:
    """The day bucket's totals as stored now, without folding first."""
    raw = await store.redis.hgetall(AccountKeys(account_id).rollup("day", bucket_start("day", NOW)))
    sums: defaultdict[str, int] = defaultdict(int)
    for name, value in raw.items():
        sums[str(name)[-1]] += int(value)  # each field ends with its metric's letter
    return Totals(sums["s"], sums["p"], sums["c"], sums["r"], sums["n"])


async def test_many_folds_at_once_count_each_record_once(store: Store) -> None:
    account = await store.accounts.create_account("c", 10**12, NOW)
    _, key = await store.accounts.create_key(account.id, "k", NOW)
    spent = await settle_records(store, account.id, key.hash, 120)
    assert (await day_totals(store, account.id)).requests == 0  # settlement no longer adds up
    folds = [store.fold, store.second_process(), store.second_process()]
    counted = await asyncio.gather(*(folds[i % 3].fold(account.id) for i in range(12)))
    assert sum(counted) == 120
    totals = await day_totals(store, account.id)
    assert (totals.requests, totals.spend, totals.prompt_tokens, totals.completion_tokens) == (
        120,
        spent,
        sum(range(120)),
        120,
    )
    await settle_records(store, account.id, key.hash, 3)
    assert await store.second_process().fold(account.id) == 3
    assert await store.fold.fold(account.id) == 0
    assert (await day_totals(store, account.id)).requests == 123


async def test_a_read_counts_what_was_settled_before_it(store: Store) -> None:
    """Activity never trails: the read folds the account first."""
    account = await store.accounts.create_account("c", 10**12, NOW)
    _, key = await store.accounts.create_key(account.id, "k", NOW)
    spent = await settle_records(store, account.id, key.hash, 5)
    [bucket] = await store.rollups.read(account.id, "hour", [bucket_start("hour", NOW)])
    assert sum(t.spend for t in bucket.by_combo.values()) == spent
    assert sorted(combo[0] for combo in bucket.by_combo) == ["m0", "m1", "m2"]


async def test_records_rolled_up_by_their_own_settlement_are_not_counted_again(
    store: Store,
) -> None:
    """An account with records from before the fold (an upgrade), or from a gateway not yet
    upgraded beside upgraded ones: those entries carry no rollup time and were counted when
    they were written."""
    account = await store.accounts.create_account("c", 10**12, NOW)
    _, key = await store.accounts.create_key(account.id, "k", NOW)
    k = AccountKeys(account.id)
    old = usage_record(account.id, key.hash, "gen-old-1", 5).to_json()
    await store.redis.xadd(k.usage_stream, {"r": old})
    assert await store.fold.fold(account.id) == 0  # nothing of its own to count yet
    await store.redis.xadd(k.usage_stream, {"r": old})  # an older gateway, after the fold began
    spent = await settle_records(store, account.id, key.hash, 4)
    assert await store.fold.fold(account.id) == 4
    assert (await day_totals(store, account.id)).spend == spent


async def test_an_upgraded_account_starts_folding_after_its_last_record(store: Store) -> None:
    """The first settlement on an account with no cursor starts it at the entry before its own."""
    account = await store.accounts.create_account("c", 10**12, NOW)
    _, key = await store.accounts.create_key(account.id, "k", NOW)
    k = AccountKeys(account.id)
    # A record from before the upgrade, in the new shape by accident: still not counted.
    await store.redis.xadd(k.usage_stream, {"r": "{}", "t": int(NOW * 1000)})
    spent = await settle_records(store, account.id, key.hash, 2)
    assert await store.fold.fold(account.id) == 2
    assert (await day_totals(store, account.id)).spend == spent


async def test_records_past_their_retention_are_not_trimmed_before_they_are_counted(
    store: Store,
) -> None:
    """The raw records are kept for 1 s here (`record_ttl_seconds`): the next settlements trim
    whole nodes of 100 entries older than that, but never past what was counted."""
    account = await store.accounts.create_account("c", 10**12, NOW)
    _, key = await store.accounts.create_key(account.id, "k", NOW)
    await settle_records(store, account.id, key.hash, 1)
    assert await store.fold.fold(account.id) == 1  # the cursor is past one entry now
    await settle_records(store, account.id, key.hash, 250)
    await asyncio.sleep(1.2)
    await settle_records(store, account.id, key.hash, 1)
    assert await store.fold.fold(account.id) == 251
    assert (await day_totals(store, account.id)).requests == 252
    await asyncio.sleep(1.2)
    await settle_records(store, account.id, key.hash, 1)  # counted ones may go now
    assert await store.redis.xlen(AccountKeys(account.id).usage_stream) < 100
    assert await store.fold.fold(account.id) == 1
    assert (await day_totals(store, account.id)).requests == 253


async def test_the_accounts_settled_are_folded_by_the_background_pass(store: Store) -> None:
    account = await store.accounts.create_account("c", 10**12, NOW)
    _, key = await store.accounts.create_key(account.id, "k", NOW)
    spent = await settle_records(store, account.id, key.hash, 3)
    runner = asyncio.create_task(store.fold.run(0.05))
    try:
        for _ in range(100):
            if (await day_totals(store, account.id)).spend == spent:
                break
            await asyncio.sleep(0.05)
        assert (await day_totals(store, account.id)).spend == spent
    finally:
        runner.cancel()


async def test_an_account_not_settled_since_the_fold_began_is_not_read_from_its_start(
    store: Store,
) -> None:
    """Its records were counted when written: a read starts the cursor after them, as its next
    settlement would, instead of reading the whole stream."""
    account = await store.accounts.create_account("c", 10**12, NOW)
    k = AccountKeys(account.id)
    for _ in range(3):
        last = await store.redis.xadd(k.usage_stream, {"r": "{}"})
    cursor, entries = await Scripts(store.redis).fold_read(
        keys=[k.rollup_cursor, k.usage_stream, k.rollup_lease], args=[1000, "", 0]
    )
    assert (cursor, entries) == (last, [])
    assert await store.redis.get(k.rollup_cursor) == last
    assert await store.fold.fold(account.id) == 0


async def test_an_entry_that_is_not_a_record_does_not_stop_the_fold(store: Store) -> None:
    account = await store.accounts.create_account("c", 10**12, NOW)
    _, key = await store.accounts.create_key(account.id, "k", NOW)
    spent = await settle_records(store, account.id, key.hash, 2)
    stream = AccountKeys(account.id).usage_stream
    await store.redis.xadd(stream, {"r": "not json", "t": int(NOW * 1000)})
    await store.redis.xadd(stream, {"r": "{}", "t": "garbled"})
    spent += await settle_records(store, account.id, key.hash, 2)
    store.fold.mark(account.id)
    await store.fold.fold_marked()
    assert (await day_totals(store, account.id)).spend == spent
    spent += await settle_records(store, account.id, key.hash, 1)
    await store.fold.fold(account.id)
    assert (await day_totals(store, account.id)).spend == spent


async def test_one_process_folds_a_busy_account_in_the_background(store: Store) -> None:
    """Another process's background fold passes the account by while one holds its lease (and
    keeps it marked); a read's fold never waits; once the lease lapses, the other takes over."""
    account = await store.accounts.create_account("c", 10**12, NOW)
    _, key = await store.accounts.create_key(account.id, "k", NOW)
    first = RollupFold(Scripts(store.redis), lease_ms=2000)  # long enough for a slow machine
    second = RollupFold(Scripts(store.redis), lease_ms=2000)
    spent = await settle_records(store, account.id, key.hash, 3)
    assert await first.fold(account.id, background=True) == 3  # takes the lease
    spent += await settle_records(store, account.id, key.hash, 2)
    second.mark(account.id)
    await second.fold_marked()
    assert (await day_totals(store, account.id)).spend == spent - (7 + 8)  # passed by
    assert await second.fold(account.id) == 2  # a read's fold: it does not wait
    spent += await settle_records(store, account.id, key.hash, 1)
    await asyncio.sleep(2.1)  # the first's lease lapses
    await second.fold_marked()  # still marked from the pass it skipped
    assert (await day_totals(store, account.id)).spend == spent
