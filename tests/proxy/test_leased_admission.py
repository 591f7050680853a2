"""A busy account through the gateway, with leases on (one request a second is "busy" here): the
official `openai` client's requests, streamed and not, admitted from the gateway's lease and each
charged exactly; a disabled key refused once a settlement has carried the change; nothing left
held once the account goes quiet."""

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.clock import Clock
from metering.accounts import hash_secret
from tests.conftest import ThreadedServer
from tests.support import (
    admin_headers,
    bearer,
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


async def test_a_disabled_key_is_refused_within_the_lease_period(busy: TestClient) -> None:
    """Admitted from the lease at most until a settlement's reply carries the change (on a
    cluster that waits for a replica), and never past `lease_seconds` (0.2 s here)."""
    _, key = await new_account(busy, purchase="1.00")
    async with _client(busy, key) as oa:
        for i in range(5):
            await oa.chat.completions.create(**chat("test/paid", f"warm {i}", max_tokens=5))
        assert await _leased(busy) > 0
        resp = await busy.patch(
            f"/admin/v1/keys/{hash_secret(key)}", json={"disabled": True}, headers=admin_headers()
        )
        assert resp.status == 200
        changed = time.monotonic()
        for _ in range(100):
            try:
                await oa.chat.completions.create(**chat("test/paid", "more", max_tokens=5))
            except openai.AuthenticationError as refused:
                assert "disabled" in str(refused)
                break
        else:
            raise AssertionError("the disabled key was still admitted")
        assert time.monotonic() - changed < 0.2 + 0.5
        with pytest.raises(openai.AuthenticationError, match="disabled"):
            await oa.chat.completions.create(**chat("test/paid", "refused", max_tokens=5))


PAID_LIMIT = """
[[limits]]
name = "paid-per-minute"
scope = "account"
match = "all"
unit = "minute"
requests = 60
"""


class MinuteStartClock(Clock):
    """Real time moved on to just after the start of a minute: a test of a per-minute window
    has 59 s before the window ends (else one straddling a minute would see two windows)."""

    def __init__(self) -> None:
        self._offset = 61 - time.time() % 60

    def now(self) -> float:
        return time.time() + self._offset


@pytest.fixture
async def limited(
    redis_url: str, provider: ThreadedServer, tmp_path: Path
) -> AsyncIterator[list[TestClient]]:
    """Two gateways on one Redis, leasing, with a limit of 60 requests a minute per account."""
    limits = tmp_path / "limits.toml"
    limits.write_text(PAID_LIMIT)
    clock = MinuteStartClock()
    clients = []
    for _ in range(2):
        settings = make_settings(
            redis_url,
            provider.url,
            lease_above_requests_per_second=1,
            lease_seconds=0.2,
            limits_file=str(limits),
        )
        client = TestClient(TestServer(create_app(settings, clock=clock), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
    yield clients
    for client in clients:
        await client.close()


async def _post(client: TestClient, key: str, i: int) -> int:
    body = chat("test/paid", f"limited {i}", max_tokens=5)
    async with client.post("/api/v1/chat/completions", json=body, headers=bearer(key)) as resp:
        await resp.read()
        return resp.status


async def test_a_windows_slices_admit_no_more_than_its_limit(limited: list[TestClient]) -> None:
    """Both gateways lease slices of the window; together they never admit past 60, and once
    they are quiet the window's count is exact: the unused slices went back."""
    first, second = limited
    account_id, key = await new_account(first, purchase="1.00")
    before = await _leased(first) + await _leased(second)
    statuses = await asyncio.gather(*(_post(limited[i % 2], key, i) for i in range(200)))
    assert set(statuses) <= {200, 429}
    admitted = statuses.count(200)
    assert 0 < admitted <= 60
    assert await _leased(first) + await _leased(second) - before > 0
    await settled_state(first, account_id)  # quiet: every slice is back
    for i in range(60 - admitted):  # what is left of the window, one request at a time
        assert await _post(limited[i % 2], key, 1000 + i) == 200, i
    assert await _post(first, key, 2000) == 429
    assert await _post(second, key, 2001) == 429
    resp = await first.put(
        f"/admin/v1/accounts/{account_id}/limits",
        json={"paid-per-minute": 61},
        headers=admin_headers(),
    )
    assert resp.status == 200
    assert await _post(second, key, 3000) == 200  # the count was 60 exactly: one more fits
    assert await _post(first, key, 3001) == 429


async def test_the_429_past_a_leased_window_says_what_remains(limited: list[TestClient]) -> None:
    client = limited[0]
    _, key = await new_account(client, purchase="1.00")
    async with _client(client, key) as oa:
        for i in range(60):
            raw = await oa.chat.completions.with_raw_response.create(
                **chat("test/paid", f"counted {i}", max_tokens=5)
            )
            assert int(raw.headers["x-ratelimit-remaining"]) <= 59 - i  # never more than is left
        with pytest.raises(openai.RateLimitError) as refused:
            await oa.chat.completions.create(**chat("test/paid", "one too many", max_tokens=5))
    assert refused.value.response.headers["x-ratelimit-remaining"] == "0"
    assert refused.value.body["metadata"]["limit"] == "paid-per-minute"  # type: ignore[index]
