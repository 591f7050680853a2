"""The metering store's contract, on every Redis server this machine has (Redis 7, Valkey 9)."""

from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal

import pytest

from gateway.redis_clients import store_client
from metering.accounts import AccountStore, AmountTooLarge, IdempotencyConflict
from metering.admission import Metering, Refusal
from metering.layout import AccountKeys
from metering.money import MAX_NANOS
from metering.rollup_fold import RollupFold
from metering.rollups import GRANULARITIES, bucket_start, next_bucket
from metering.scripts import Scripts
from metering.usage import new_generation_id
from tests.support import usage_record

NOW = 1_795_000_000.0


@pytest.fixture
async def stores(any_redis_url: str) -> AsyncIterator[tuple[AccountStore, Metering]]:
    redis = store_client(any_redis_url)
    scripts = Scripts(redis)
    yield (
        AccountStore(redis, scripts),
        Metering(redis, scripts, reservation_timeout=60, record_ttl_seconds=3600),
    )
    await redis.aclose()


async def test_reserve_then_settle_exactly_once(stores: tuple[AccountStore, Metering]) -> None:
    accounts, metering = stores
    account = await accounts.create_account("c", 1_000, NOW)
    _, key = await accounts.create_key(account.id, "k", NOW)
    gid = new_generation_id(account.id)
    admitted = await metering.admit(account.id, key.hash, gid, 600, paid=True, now=NOW)
    assert admitted.admitted and admitted.reserved == 600
    second = await metering.admit(
        account.id, key.hash, new_generation_id(account.id), 600, paid=True, now=NOW
    )
    assert second.refusal is Refusal.INSUFFICIENT and second.available == 400
    record = usage_record(account.id, key.hash, gid, 250)
    assert (await metering.settle(record, NOW)).applied
    again = await metering.settle(replace(record, cost=999), NOW)
    assert not again.applied and again.balance == 750
    state = await accounts.get_account(account.id)
    assert state is not None and (state.balance, state.reserved, state.usage) == (750, 0, 250)
    stored = await metering.generation(account.id, gid)
    assert stored is not None and stored.cost == 250
    key_state = await accounts.get_key(account.id, key.hash, NOW)
    assert key_state is not None and key_state.usage == key_state.usage_daily == 250


async def test_orphaned_reservation_is_released_after_its_timeout(
    stores: tuple[AccountStore, Metering],
) -> None:
    accounts, metering = stores
    account = await accounts.create_account("c", 1_000, NOW)
    _, key = await accounts.create_key(account.id, "k", NOW)
    await metering.admit(
        account.id, key.hash, new_generation_id(account.id), 1_000, paid=True, now=NOW
    )  # its gateway "dies": never settled
    blocked = await metering.admit(
        account.id, key.hash, new_generation_id(account.id), 1, paid=True, now=NOW + 59
    )
    assert blocked.refusal is Refusal.INSUFFICIENT
    freed = await metering.admit(
        account.id, key.hash, new_generation_id(account.id), 1_000, paid=True, now=NOW + 61
    )
    assert freed.admitted and freed.reserved == 1_000


async def test_settlement_after_expiry_still_charges_once(
    stores: tuple[AccountStore, Metering],
) -> None:
    accounts, metering = stores
    account = await accounts.create_account("c", 1_000, NOW)
    _, key = await accounts.create_key(account.id, "k", NOW)
    gid = new_generation_id(account.id)
    await metering.admit(account.id, key.hash, gid, 500, paid=True, now=NOW)
    await metering.admit(
        account.id, key.hash, new_generation_id(account.id), 0, paid=False, now=NOW + 120
    )  # sweeps the expired reservation
    await metering.settle(usage_record(account.id, key.hash, gid, 300), NOW + 121)
    state = await accounts.get_account(account.id)
    assert state is not None and (state.balance, state.reserved) == (700, 0)


async def test_disabled_and_unknown_keys_are_refused(stores: tuple[AccountStore, Metering]) -> None:
    accounts, metering = stores
    account = await accounts.create_account("c", 1_000, NOW)
    _, key = await accounts.create_key(account.id, "k", NOW)
    await accounts.update_key(key.hash, NOW, disabled=True)
    gid = new_generation_id(account.id)
    result = await metering.admit(account.id, key.hash, gid, 1, paid=True, now=NOW)
    assert result.refusal is Refusal.DISABLED
    result = await metering.admit(account.id, "0" * 64, gid, 1, paid=True, now=NOW)
    assert result.refusal is Refusal.NO_KEY
    state = await accounts.get_account(account.id)
    assert state is not None and state.reserved == 0


async def test_purchase_idempotency_and_bounds(stores: tuple[AccountStore, Metering]) -> None:
    accounts, _ = stores
    account = await accounts.create_account("c", 0, NOW)
    first, created = await accounts.purchase(
        account.id, Decimal("10.00"), 800_000_000, "card", "order-9", NOW
    )
    again, created_again = await accounts.purchase(
        account.id, Decimal("10.00"), 800_000_000, "card", "order-9", NOW + 5
    )
    assert created and not created_again and again == first
    with pytest.raises(IdempotencyConflict):
        await accounts.purchase(account.id, Decimal("10.00"), 0, "crypto", "order-9", NOW)
    with pytest.raises(AmountTooLarge):
        await accounts.purchase(account.id, Decimal(MAX_NANOS) / 10**9, 0, "card", "big", NOW)
    state = await accounts.get_account(account.id)
    assert state is not None and state.balance == state.purchased == 10_000_000_000


async def test_settle_many_applies_each_generation_once(
    stores: tuple[AccountStore, Metering],
) -> None:
    accounts, metering = stores
    account = await accounts.create_account("c", 10_000, NOW)
    _, key = await accounts.create_key(account.id, "k", NOW)
    batch = [
        (usage_record(account.id, key.hash, new_generation_id(account.id), 100), NOW)
        for _ in range(5)
    ]
    assert await metering.settle_many(batch) == 5
    assert await metering.settle_many(batch[:2]) == 0  # already settled
    state = await accounts.get_account(account.id)
    assert state is not None and (state.balance, state.usage) == (9_500, 500)


async def test_a_repeated_admission_reserves_once(stores: tuple[AccountStore, Metering]) -> None:
    accounts, metering = stores
    account = await accounts.create_account("c", 1_000, NOW)
    _, key = await accounts.create_key(account.id, "k", NOW)
    gid = new_generation_id(account.id)
    for _ in range(2):  # the first reply was "lost": the client runs it again
        result = await metering.admit(account.id, key.hash, gid, 600, paid=True, now=NOW)
        assert result.admitted and result.reserved == 600
    await metering.settle(usage_record(account.id, key.hash, gid, 100), NOW)
    state = await accounts.get_account(account.id)
    assert state is not None and (state.balance, state.reserved) == (900, 0)


async def test_a_released_admission_holds_nothing_even_if_it_runs_late(
    stores: tuple[AccountStore, Metering],
) -> None:
    """The gateway gave up waiting for an admission (503): it releases the id. Whether the
    admission ran before the release or reaches Redis after it, nothing stays held."""
    accounts, metering = stores
    account = await accounts.create_account("c", 1_000, NOW)
    _, key = await accounts.create_key(account.id, "k", NOW)
    ran_first, runs_late = new_generation_id(account.id), new_generation_id(account.id)
    await metering.admit(account.id, key.hash, ran_first, 600, paid=True, now=NOW)
    await metering.release(account.id, ran_first, NOW)
    await metering.release(account.id, runs_late, NOW)
    await metering.admit(account.id, key.hash, runs_late, 600, paid=True, now=NOW)
    state = await accounts.get_account(account.id)
    assert state is not None and (state.balance, state.reserved) == (1_000, 0)
    # The whole balance is there for the next request; the tombstones go at their expiry.
    whole = await metering.admit(
        account.id, key.hash, new_generation_id(account.id), 1_000, paid=True, now=NOW + 61
    )
    assert whole.admitted and whole.reserved == 1_000


async def test_every_activity_bucket_expires_after_its_retention(
    any_redis_url: str, stores: tuple[AccountStore, Metering]
) -> None:
    """A bucket's expiry is set by the fold that writes it, to its retention after the bucket's
    end, counted from its newest record's time: never sooner than the retention after its last
    write (every write comes before its end), never later than that plus the bucket's length,
    never forever."""
    accounts, metering = stores
    account = await accounts.create_account("c", 1_000_000, NOW)
    _, key = await accounts.create_key(account.id, "k", NOW)
    for model in ("m", "m", "other", "m"):
        gid = new_generation_id(account.id)
        await metering.settle(
            replace(usage_record(account.id, key.hash, gid, 10), model=model), NOW
        )
    redis = store_client(any_redis_url)
    try:
        await RollupFold(Scripts(redis)).fold(account.id)
        retention = dict(zip(GRANULARITIES, (7, 90, 730, 730), strict=True))
        for granularity in GRANULARITIES:
            bucket = AccountKeys(account.id).rollup(granularity, bucket_start(granularity, NOW))
            assert await redis.exists(bucket)
            ttl = await redis.ttl(bucket)
            left = next_bucket(granularity, bucket_start(granularity, NOW)) - NOW
            kept = retention[granularity] * 86_400 + left
            assert kept - 5 <= ttl <= kept
    finally:
        await redis.aclose()


async def test_a_record_is_stored_once_and_found_by_its_generation_id(
    any_redis_url: str, stores: tuple[AccountStore, Metering]
) -> None:
    """The record lives in the account's stream; its generation key holds only the entry id (so
    a million records cost one copy of each). A key written whole, before that, still reads."""
    accounts, metering = stores
    account = await accounts.create_account("c", 1_000_000, NOW)
    _, key = await accounts.create_key(account.id, "k", NOW)
    gid = new_generation_id(account.id)
    record = usage_record(account.id, key.hash, gid, 250)
    assert (await metering.settle(record, NOW)).applied
    assert await metering.generation(account.id, gid) == record
    assert await metering.generation(account.id, new_generation_id(account.id)) is None
    redis = store_client(any_redis_url)
    try:
        pointer = await redis.get(AccountKeys(account.id).generation(gid))
        assert pointer is not None and len(pointer) < 32 < len(record.to_json())
        old_style = new_generation_id(account.id)
        older = replace(record, id=old_style, cost=7)
        await redis.set(AccountKeys(account.id).generation(old_style), older.to_json(), ex=60)
        assert await metering.generation(account.id, old_style) == older
    finally:
        await redis.aclose()


async def test_a_record_keeps_its_optional_fields_only_when_known(
    any_redis_url: str, stores: tuple[AccountStore, Metering]
) -> None:
    """upstream_id, external_user, origin and cache_discount are left out of the stored record
    when None (every request writes one), and read back as they were when set."""
    accounts, metering = stores
    account = await accounts.create_account("c", 1_000_000, NOW)
    _, key = await accounts.create_key(account.id, "k", NOW)
    plain = usage_record(account.id, key.hash, new_generation_id(account.id), 250)
    full = replace(
        usage_record(account.id, key.hash, new_generation_id(account.id), 250),
        upstream_id="chatcmpl-1",
        external_user="user-123",
        origin="https://app.example/",
        cache_discount=-75,
    )
    for record in (plain, full):
        assert (await metering.settle(record, NOW)).applied
        assert await metering.generation(account.id, record.id) == record
    redis = store_client(any_redis_url)
    try:
        stored = [
            fields["r"] for _, fields in await redis.xrange(AccountKeys(account.id).usage_stream)
        ]
    finally:
        await redis.aclose()
    assert "null" not in stored[0].replace('"finish_reason":null', "")
    assert not any(name in stored[0] for name in ("upstream_id", "origin", "cache_discount"))
    assert '"origin":"https://app.example/"' in stored[1] and '"cache_discount":-75' in stored[1]
