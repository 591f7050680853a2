"""200 requests race on an account that can afford about 10 at a time: nothing is overspent,
nothing stays reserved (the burst makes the account busy enough to be leased: its lease goes back
within a moment of the last request), and the final balance is exact to the nanodollar."""

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from tests.support import (
    ThreadedServer,
    bearer,
    chat,
    make_settings,
    new_account,
    settled_state,
)

# test/delay: max_output_tokens 100, so a "Hello there" request reserves its estimated prompt
# (half the body's bytes and 4 a message) x $0.00000015 + 100 x $0.0000006; its real cost is
# 6 x 150 + 16 x 600 = 10,500 nanodollars.
BODY = orjson.dumps(chat("test/delay"))
PROMPT_ESTIMATE = -(-len(BODY) // 2) + 4
WORST_CASE = PROMPT_ESTIMATE * Decimal("0.00000015") + 100 * Decimal("0.0000006")
REAL_COST = Decimal("0.0000105")


@pytest.fixture
async def race_client(redis_url: str, provider: ThreadedServer) -> AsyncIterator[TestClient]:
    # The test's 200 clients share the gateway's event loop: in one burst they wait on the loop,
    # not on Redis, so the admission bound (250 ms by default) is widened for this test.
    app = create_app(make_settings(redis_url, provider.url, admission_timeout_seconds=10))
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def test_racing_requests_never_overspend(race_client: TestClient) -> None:
    client = race_client
    grant = WORST_CASE * 10
    account_id, key = await new_account(client, grant=str(grant))

    async def one() -> int:
        resp = await client.post("/api/v1/chat/completions", data=BODY, headers=bearer(key))
        await resp.read()
        return resp.status

    statuses = await asyncio.gather(*(one() for _ in range(200)))
    ok = statuses.count(200)
    assert ok + statuses.count(402) == 200
    assert ok >= 10  # at least the first ten fit at once
    assert statuses.count(402) > 0  # and the race did hit the limit
    state = await settled_state(client, account_id)  # nothing reserved, within 5 s
    assert Decimal(state["balance"]) == grant - ok * REAL_COST
    assert Decimal(state["balance"]) >= 0
    assert Decimal(state["total_usage"]) == ok * REAL_COST
