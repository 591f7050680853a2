"""One gateway process of the leasing race (tests/metering/test_leases_racing.py): many requests
at once on one account, admitted from leases renewed every 50 ms, each settled at a random cost
no larger than its worst case, until the credit runs out. Prints what it spent, as JSON."""

import asyncio
import random
import sys
import time

import orjson

from gateway.redis_clients import store_client
from metering.admission import Metering, Refusal
from metering.scripts import Scripts
from metering.usage import new_generation_id
from tests.support import usage_record

TASKS = 16
MAX_REQUESTS = 400  # per task
GIVE_UP_AFTER = 20  # refusals in a row: the credit is gone


async def race(
    url: str, account_id: str, key_hash: str, seed: int, start_at: float
) -> dict[str, int]:
    redis = store_client(url)
    metering = Metering(
        redis,
        Scripts(redis),
        reservation_timeout=60,
        record_ttl_seconds=60,
        lease_above_per_second=1,
        lease_seconds=0.05,
    )
    rng = random.Random(seed)
    totals = {"spent": 0, "leased": 0, "plain": 0, "refused": 0}

    async def requests() -> None:
        refused = 0
        for _ in range(MAX_REQUESTS):
            reserve = rng.randrange(200_000, 2_000_000)
            gid = new_generation_id(account_id)
            now = time.time()
            result = await metering.admit(
                account_id, key_hash, gid, reserve, paid=True, now=now, leasable=True
            )
            if not result.admitted:
                assert result.refusal is Refusal.INSUFFICIENT, result.refusal
                totals["refused"] += 1
                refused += 1
                if refused == GIVE_UP_AFTER:
                    return
                await asyncio.sleep(0.002)
                continue
            refused = 0
            totals["leased" if result.lease else "plain"] += 1
            await asyncio.sleep(rng.random() * 0.003)
            cost = reserve if rng.random() < 0.1 else rng.randrange(0, reserve + 1)
            record = usage_record(account_id, key_hash, gid, cost)
            reply = await metering.send_settlement(record, now, lease=result.lease)
            if metering.settled(record, reply, now, result.lease).applied:
                totals["spent"] += cost

    async def upkeep() -> None:
        while True:
            await asyncio.sleep(0.05)
            await metering.leases.tick(time.time())

    await asyncio.sleep(max(start_at - time.time(), 0))  # all processes start together
    keeper = asyncio.ensure_future(upkeep())
    await asyncio.gather(*(requests() for _ in range(TASKS)))
    keeper.cancel()
    await metering.leases.close(time.time())
    await redis.aclose()
    return totals


if __name__ == "__main__":
    url, account, key, seed, start_at = sys.argv[1:6]
    print(orjson.dumps(asyncio.run(race(url, account, key, int(seed), float(start_at)))).decode())
