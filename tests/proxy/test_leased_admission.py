"""A busy account through the gateway, with leases on (one request a second is "busy" here): the
official `openai` client's requests, streamed and not, admitted from the gateway's lease and each
charged exactly; a disabled key refused once a settlement has carried the change; nothing left
held once the account goes quiet."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal

import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from metering.accounts import hash_secret
from tests.conftest import ThreadedServer
from tests.support import (
    admin_headers,
    chat,
    generation_record,
    make_settings,
    new_account,
    settled_state,
)


@pytest.fixture
async def busy(redis_url: str, provider: ThreadedServer) -> AsyncIterator[TestClient]:
    settings = make_settings(
        redis_url, provider.url, lease_above_requests_per_second=1, lease_seconds=0.2
    )
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as c:
        yield c


def _client(client: TestClient, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=str(client.make_url("/api/v1")), api_key=key, max_retries=0, timeout=20
    )


async def _leased(client: TestClient) -> float:
    for line in (await (await client.get("/metrics")).text()).splitlines():
        if line.startswith("gateway_leased_admissions_total "):
            return float(line.split()[1])
    return 0.0


async def test_a_busy_accounts_requests_are_leased_and_charged_exactly(busy: TestClient) -> None:
    account_id, key = await new_account(busy, purchase="1.00")
    before = await _leased(busy)
    async with _client(busy, key) as oa:

        async def one(i: int) -> str:
            body = chat("test/paid", f"request {i}", max_tokens=20)
            if i % 2:
                raw = await oa.chat.completions.with_raw_response.create(**body)
                return raw.headers["x-generation-id"]
            async with oa.chat.completions.with_streaming_response.create(
                **body, stream=True
            ) as stream:
                async for _ in stream.iter_lines():
                    pass
                return stream.headers["x-generation-id"]

        ids = await asyncio.gather(*(one(i) for i in range(40)))
    assert await _leased(busy) - before >= 30  # all but the first few, by a lease
    costs = [Decimal((await generation_record(busy, key, gid))["total_cost_usd"]) for gid in ids]
    state = await settled_state(busy, account_id)  # the idle lease is given back
    assert Decimal(state["balance"]) == Decimal("1.00") - sum(costs)
    assert all(cost > 0 for cost in costs)


async def test_a_disabled_key_is_refused_once_a_settlement_carried_the_change(
    busy: TestClient,
) -> None:
    _, key = await new_account(busy, purchase="1.00")
    async with _client(busy, key) as oa:
        for i in range(5):
            await oa.chat.completions.create(**chat("test/paid", f"warm {i}", max_tokens=5))
        assert await _leased(busy) > 0
        resp = await busy.patch(
            f"/admin/v1/keys/{hash_secret(key)}", json={"disabled": True}, headers=admin_headers()
        )
        assert resp.status == 200
        # Admitted from the lease at most while no settlement has said otherwise:
        with contextlib.suppress(openai.AuthenticationError):
            await oa.chat.completions.create(**chat("test/paid", "one more", max_tokens=5))
        with pytest.raises(openai.AuthenticationError, match="disabled"):
            await oa.chat.completions.create(**chat("test/paid", "refused", max_tokens=5))
