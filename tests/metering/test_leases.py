"""Leased admission for busy accounts (metering/leasing/): requests admitted from a slice of the
account's credit held by one process, with no round trip each; every cost drawn from the lease
in Redis; slices given back when idle, recalled by a refund or a key change, and released when
their process dies. On each server this machine has, and on a cluster of each."""

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import pytest

from gateway.redis_clients import store_client
from metering.accounts import AccountStore
from metering.admission import AdmissionResult, Metering, Refusal
from metering.layout import AccountKeys
from metering.ledger import Ledger
from metering.scripts import Scripts
from metering.transport.client import AnyRedis
from metering.usage import new_generation_id
from tests.support import usage_record

NOW = time.time()
RESERVE = 1_000_000
GENERATIONS: defaultdict[str, list[str]] = defaultdict(list)  # admitted, in order, per account


@dataclass
class Store:
    redis: AnyRedis
    accounts: AccountStore
    ledger: Ledger

    def process(self, *, above: float = 5, seconds: float = 0.05, timeout: float = 60) -> Metering:
        """One gateway process's metering, leasing above `above` requests a second."""
        return Metering(
            self.redis,
            Scripts(self.redis),
            reservation_timeout=timeout,
            record_ttl_seconds=60,
            lease_above_per_second=above,
            lease_seconds=seconds,
        )


@pytest.fixture
async def store(any_redis_url: str) -> AsyncIterator[Store]:
    redis = store_client(any_redis_url)
    scripts = Scripts(redis)
    yield Store(redis, AccountStore(redis, scripts), Ledger(redis, scripts))
    await redis.aclose()


async def account_with(store: Store, credit: int) -> tuple[str, str]:
    account = await store.accounts.create_account("lease", credit, NOW)
    _, key = await store.accounts.create_key(account.id, "k", NOW)
    return account.id, key.hash


async def admit(
    metering: Metering, account_id: str, key_hash: str, **kw: object
) -> AdmissionResult:
    now = float(kw.pop("now", NOW))  # type: ignore[arg-type]
    reserve = int(kw.pop("reserve", RESERVE))  # type: ignore[call-overload]
    gid = new_generation_id(account_id)
    GENERATIONS[account_id].append(gid)
    return await metering.admit(
        account_id, key_hash, gid, reserve, paid=True, now=now, leasable=True
    )


async def settle(
    metering: Metering, admitted: AdmissionResult, account_id: str, key: str, cost: int
) -> None:
    record = usage_record(account_id, key, GENERATIONS[account_id].pop(0), cost)
    reply = await metering.send_settlement(record, NOW, lease=admitted.lease)
    assert metering.settled(record, reply, NOW, admitted.lease).applied


async def held(store: Store, account_id: str) -> tuple[int, int, dict[str, str]]:
    k = AccountKeys(account_id)
    acct = await store.redis.hgetall(k.account)
    return (
        int(acct["balance"]),
        int(acct.get("reserved", 0)),
        await store.redis.hgetall(k.reservations),
    )


async def test_a_busy_account_is_admitted_from_its_lease_and_pays_exactly(store: Store) -> None:
    account_id, key = await account_with(store, 10**12)
    metering = store.process(above=5)
    results = [await admit(metering, account_id, key) for _ in range(40)]
    leased = [r for r in results if r.lease is not None]
    assert all(r.admitted for r in results)
    assert len(results) - len(leased) == 4  # below the rate: one round trip each
    _, reserved, holds = await held(store, account_id)
    leases = {name: int(v) for name, v in holds.items() if name.startswith("lease-")}
    assert len(leases) == 1  # one lease, renewed under a new id when it ran short
    assert reserved == 4 * RESERVE + sum(leases.values())  # admitted from it: nothing new in Redis
    assert sum(leases.values()) >= len(leased) * RESERVE
    for i, result in enumerate(results):
        await settle(metering, result, account_id, key, 700_000 + i)
    balance, reserved, holds = await held(store, account_id)
    assert balance == 10**12 - sum(700_000 + i for i in range(40))
    lease_left = sum(int(v) for name, v in holds.items() if name.startswith("lease-"))
    assert reserved == lease_left  # what the lease still holds, and nothing else
    await metering.leases.close(NOW)
    balance_after, reserved, holds = await held(store, account_id)
    assert (balance_after, reserved, holds) == (balance, 0, {})


async def test_a_lease_takes_at_most_half_of_what_is_free(store: Store) -> None:
    account_id, key = await account_with(store, 20 * RESERVE)
    first, second = store.process(above=1), store.process(above=1)
    assert (await admit(first, account_id, key)).lease is not None
    assert (await admit(second, account_id, key)).lease is not None
    _, reserved, holds = await held(store, account_id)
    slices = sorted(int(v) for v in holds.values())
    assert slices == [6 * RESERVE, 8 * RESERVE]  # 8 asked; then half of the 12 left was 6
    assert reserved == 14 * RESERVE
    plain = await admit(store.process(above=1000), account_id, key, reserve=6 * RESERVE)
    assert plain.admitted and plain.lease is None  # the rest is anyone's
    refused = await admit(store.process(above=1000), account_id, key)
    assert refused.refusal is Refusal.INSUFFICIENT


async def test_an_idle_lease_is_given_back(store: Store) -> None:
    account_id, key = await account_with(store, 10**12)
    metering = store.process(above=1, seconds=0.2)
    result = await admit(metering, account_id, key)
    assert result.lease is not None
    await metering.leases.tick(NOW + 1)  # idle but for one request in flight
    _, reserved, _ = await held(store, account_id)
    assert reserved == RESERVE  # only what that request may cost
    await settle(metering, result, account_id, key, 10)
    await metering.leases.tick(NOW + 2)
    _, reserved, holds = await held(store, account_id)
    assert (reserved, holds) == (0, {})
    assert metering.leases.lease_of(account_id) is None  # and the quiet account is forgotten


async def test_a_key_change_is_seen_at_the_next_settlement(store: Store) -> None:
    account_id, key = await account_with(store, 10**12)
    metering = store.process(above=1)
    first = await admit(metering, account_id, key)
    assert first.lease is not None and (await admit(metering, account_id, key)).lease is not None
    await store.accounts.update_key(key, NOW, disabled=True)
    await settle(metering, first, account_id, key, 5)  # its reply carries the new epoch
    refused = await admit(metering, account_id, key)
    assert refused.lease is None and refused.refusal is Refusal.DISABLED


async def test_a_key_with_a_credit_limit_is_never_leased(store: Store) -> None:
    account_id, key = await account_with(store, 10**12)
    await store.accounts.update_key(key, NOW, limit=50 * RESERVE)
    metering = store.process(above=1)
    results = [await admit(metering, account_id, key) for _ in range(60)]
    assert all(r.admitted and r.lease is None for r in results)
    lease = metering.leases.lease_of(account_id)
    assert lease is not None and not lease.hold  # the key was refused a lease, not asked again


async def test_a_refund_recalls_the_leases_it_needs(store: Store) -> None:
    account = await store.accounts.create_account("lease", 0, NOW)
    _, key_record = await store.accounts.create_key(account.id, "k", NOW)
    account_id, key = account.id, key_record.hash
    purchase, _ = await store.accounts.purchase(account_id, Decimal("1"), 0, "card", "p1", NOW)
    metering = store.process(above=1)
    in_flight = await admit(metering, account_id, key)
    assert in_flight.lease is not None  # the lease holds half of the dollar
    started = time.monotonic()
    refund = asyncio.ensure_future(store.ledger.refund(account_id, purchase.id, NOW, 86_400))
    await asyncio.sleep(0.3)
    assert not refund.done()  # waiting for the leased credit
    await settle(metering, in_flight, account_id, key, 250_000)  # the recall is seen here
    done = await asyncio.wait_for(refund, 5)
    assert time.monotonic() - started < 3
    assert done.refunded == 10**9 - 250_000
    balance, reserved, _ = await held(store, account_id)
    assert (balance, reserved) == (0, 0)
    assert (await admit(metering, account_id, key)).refusal is Refusal.INSUFFICIENT


async def test_the_lease_of_a_process_that_died_expires(store: Store) -> None:
    account_id, key = await account_with(store, 10**12)
    dead = store.process(above=1, timeout=1)
    assert (await admit(dead, account_id, key)).lease is not None
    _, reserved, _ = await held(store, account_id)
    assert reserved == 8 * RESERVE
    alive = store.process(above=1000, timeout=1)
    result = await admit(alive, account_id, key, now=NOW + 1.5)  # runs release_stale
    assert result.admitted and result.reserved == RESERVE


async def test_a_renewal_run_again_changes_nothing(store: Store) -> None:
    """A renewal resent after a lost connection (or overtaken by a later one) is refused as
    stale: no second slice of credit or of a window, nothing given back twice."""
    account_id, key = await account_with(store, 10**12)
    metering = store.process(above=1)
    calls: list[tuple[object, list[str], list[object]]] = []
    run = metering.leases._run

    async def recorded(script, keys, args):  # type: ignore[no-untyped-def]
        calls.append((script, keys, args))
        return await run(script, keys, args)

    metering.leases._run = recorded  # type: ignore[method-assign]
    assert (await admit(metering, account_id, key)).lease is not None
    before = await held(store, account_id)
    script, keys, args = calls[-1]
    again = await script(keys=keys, args=args)  # type: ignore[operator]
    assert again[0] == "stale"
    assert await held(store, account_id) == before
    lease = metering.leases.lease_of(account_id)
    assert lease is not None
    lease.renewing = asyncio.get_running_loop().create_future()
    assert lease.take(key, 1, NOW, ()) is None  # nothing is taken while a renewal is out
    lease.renewing.set_result(None)
    lease.renewing = None


async def test_a_duplicate_settlement_reply_never_widens_the_slice(store: Store) -> None:
    """The first reply was lost after the script ran; the resend answers `duplicate`: the cost
    still counts as drawn, so the slice is never larger than what the lease holds in Redis."""
    account_id, key = await account_with(store, 10**12)
    metering = store.process(above=1)
    first = await admit(metering, account_id, key)
    assert first.lease is not None
    lease = first.lease.lease
    room = lease.room
    record = usage_record(account_id, key, GENERATIONS[account_id].pop(0), 600_000)
    await metering.send_settlement(record, NOW, lease=first.lease)  # its reply "lost"
    reply = await metering.send_settlement(record, NOW, lease=first.lease)
    assert reply[1] == "duplicate"
    metering.settled(record, reply, NOW, first.lease)
    assert lease.room == room + RESERVE - 600_000
    _, _, holds = await held(store, account_id)
    assert int(holds[lease.hold]) - lease.in_flight >= lease.room
