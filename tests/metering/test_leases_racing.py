"""No overspend with leases, across real processes: four gateway processes race on one account's
credit, each admitting from leases renewed every 50 ms beside one-round-trip admissions, while
the account's keys change (each change recalls every lease). Whatever the interleaving, the
account pays exactly what was settled, never more than it had, and nothing stays held."""

import asyncio
import sys
import time

import orjson

from gateway.redis_clients import store_client
from metering.accounts import AccountStore
from metering.layout import AccountKeys
from metering.scripts import Scripts

CREDIT = 2_000_000_000  # nanodollars: some 3,000 requests' worth, far less than the demand
PROCESSES = 4


async def test_racing_processes_never_spend_more_than_the_account_has(redis_url: str) -> None:
    redis = store_client(redis_url)
    accounts = AccountStore(redis, Scripts(redis))
    now = time.time()
    account = await accounts.create_account("race", CREDIT, now)
    _, key = await accounts.create_key(account.id, "k", now)
    start_at = str(time.time() + 3)  # each process is up by then
    racers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.metering.lease_racer",
            redis_url,
            account.id,
            key.hash,
            str(seed),
            start_at,
            stdout=asyncio.subprocess.PIPE,
        )
        for seed in range(PROCESSES)
    ]
    await asyncio.sleep(max(float(start_at) - time.time(), 0))
    for i in range(20):  # key changes while they race: every lease is recalled each time
        await asyncio.sleep(0.05)
        await accounts.update_key(key.hash, time.time(), name=f"k{i}")
    outputs = await asyncio.wait_for(asyncio.gather(*(r.communicate() for r in racers)), 120)
    assert [r.returncode for r in racers] == [0] * PROCESSES
    totals = [orjson.loads(out) for out, _ in outputs]
    k = AccountKeys(account.id)
    state = await redis.hgetall(k.account)
    spent = sum(t["spent"] for t in totals)
    assert int(state["balance"]) == CREDIT - spent  # exactly what was settled
    assert int(state["balance"]) >= 0  # never more than it had: every cost was within its bound
    assert int(state["reserved"]) == 0 and await redis.hlen(k.reservations) == 0
    assert sum(t["leased"] for t in totals) > sum(t["plain"] for t in totals) > 0
    assert all(t["refused"] for t in totals)  # each ran the credit out
    assert int(state["balance"]) < 10 * 2_000_000  # little left unspent: slices came back
    await redis.aclose()
