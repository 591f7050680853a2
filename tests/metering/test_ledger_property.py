"""Property test of the ledger against a real Redis: random sequences of purchases, requests
(some settled concurrently), refunds, expiries and time passing; after every step the balance is
exactly grants + purchases - refunds - expired - usage, the ledger's entries sum to it, and
nothing stays reserved.

Examples: LEDGER_EXAMPLES (default 25 in `make test`; raise it for a longer search).
"""

import asyncio
import contextlib
import os
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.redis_clients import store_client
from metering.accounts import AccountStore
from metering.admission import Metering
from metering.ledger import Ledger, RefundRefused
from metering.scripts import Scripts
from metering.usage import new_generation_id
from tests.support import usage_record

START = 1_795_780_800.0
DAY = 86_400.0
EXAMPLES = int(os.environ.get("LEDGER_EXAMPLES", "25"))

purchase = st.tuples(
    st.just("purchase"), st.integers(1, 50_000), st.sampled_from(["card", "crypto"])
)
request = st.tuples(st.just("request"), st.integers(0, 5_000_000), st.integers(0, 3_000_000))
together = st.tuples(st.just("together"), st.integers(2, 6), st.integers(0, 2_000_000))
refund = st.tuples(st.just("refund"), st.integers(0, 20), st.just(0))
advance = st.tuples(st.just("advance"), st.sampled_from([1, 4, 200, 600]), st.just(0))  # half days
expire = st.tuples(st.just("expire"), st.just(0), st.just(0))
steps = st.lists(st.one_of(purchase, request, together, refund, advance, expire), max_size=25)


async def _run(redis_url: str, grant: int, plan: list[tuple[str, int, int]]) -> None:
    redis = store_client(redis_url)
    try:
        scripts = Scripts(redis)
        accounts = AccountStore(redis, scripts)
        metering = Metering(redis, scripts, reservation_timeout=3600, record_ttl_seconds=3600)
        ledger = Ledger(redis, scripts)
        now = START
        account = await accounts.create_account("p", grant, now)
        _, key = await accounts.create_key(account.id, "k", now)
        purchases: list[str] = []

        async def spend(cost: int, extra: int) -> None:
            gid = new_generation_id(account.id)
            admitted = await metering.admit(
                account.id, key.hash, gid, cost + extra, paid=True, now=now
            )
            if admitted.admitted:
                await metering.settle(usage_record(account.id, key.hash, gid, cost), now)

        for n, (kind, a, b) in enumerate(plan):
            if kind == "purchase":
                bought, _ = await accounts.purchase(
                    account.id, Decimal(int(a)) / 100, 0, str(b), f"p{n}", now
                )  # type: ignore[arg-type]
                purchases.append(bought.id)
            elif kind == "request":
                await spend(a, b)
            elif kind == "together":
                await asyncio.gather(*(spend(b, 0) for _ in range(a)))
            elif kind == "refund" and purchases:
                with contextlib.suppress(RefundRefused):
                    await ledger.refund(account.id, purchases[int(a) % len(purchases)], now, DAY)
            elif kind == "advance":
                now += a * DAY / 2
            elif kind == "expire":
                await ledger.expire(account.id, now, 365 * DAY)
            state = await accounts.get_account(account.id)
            assert state is not None
            assert state.reserved == 0
            assert state.balance == state.granted + state.purchased - state.expired - state.usage
            assert state.purchased >= 0 and state.expired >= 0 and state.refunded >= 0
            entries, more = await ledger.entries(account.id, None, 10_000)
            assert more is None
            assert sum(e.amount for e in entries) == state.balance, (kind, entries)
    finally:
        await redis.aclose()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(grant=st.integers(0, 2_000_000_000), plan=steps)
def test_the_ledger_always_adds_up(
    redis_url: str, grant: int, plan: list[tuple[str, int, int]]
) -> None:
    asyncio.run(_run(redis_url, grant, plan))
