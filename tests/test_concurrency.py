"""200 requests race on an account that can afford about 10 at a time: nothing is overspent,
nothing stays reserved, and the final balance is exact to the nanodollar."""

import asyncio
from decimal import Decimal

from aiohttp.test_utils import TestClient

from tests.support import account_state, bearer, chat, new_account

# test/delay: max_output_tokens 100, so the worst case of a "Hello there" request is
# 13 estimated prompt tokens x 150 + 100 x 600 = 61,950 nanodollars; its real cost is
# 6 x 150 + 16 x 600 = 10,500.
WORST_CASE = Decimal("0.00006195")
REAL_COST = Decimal("0.0000105")


async def test_racing_requests_never_overspend(client: TestClient) -> None:
    grant = WORST_CASE * 10
    account_id, key = await new_account(client, grant=str(grant))

    async def one() -> int:
        resp = await client.post(
            "/api/v1/chat/completions", json=chat("test/delay"), headers=bearer(key)
        )
        await resp.read()
        return resp.status

    statuses = await asyncio.gather(*(one() for _ in range(200)))
    ok = statuses.count(200)
    assert ok + statuses.count(402) == 200
    assert ok >= 10  # at least the first ten fit at once
    assert statuses.count(402) > 0  # and the race did hit the limit
    state = await account_state(client, account_id)
    assert state["reserved"] == "0.00"
    assert Decimal(state["balance"]) == grant - ok * REAL_COST
    assert Decimal(state["balance"]) >= 0
    assert Decimal(state["total_usage"]) == ok * REAL_COST
