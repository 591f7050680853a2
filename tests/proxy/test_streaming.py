"""Streams: usage with cost in the last chunk, client disconnects, providers that break off."""

import asyncio
from decimal import Decimal

import aiohttp
from aiohttp.test_utils import TestClient

from tests.sse import read_events
from tests.support import (
    COMPLETION_PRICE,
    PROMPT_PRICE,
    ThreadedServer,
    account_state,
    bearer,
    chat,
    generation_record,
    new_account,
)


async def test_stream_ends_with_usage_and_cost_before_done(client: TestClient) -> None:
    account_id, key = await new_account(client, purchase="1.00")
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/paid", stream=True), headers=bearer(key)
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    generation_id = resp.headers["X-Generation-Id"]
    events = await read_events(resp)
    assert events[-1] == "[DONE]"
    final = events[-2]
    assert final["choices"] == [] and final["id"] == generation_id
    usage = final["usage"]
    cost = usage["prompt_tokens"] * PROMPT_PRICE + usage["completion_tokens"] * COMPLETION_PRICE
    assert Decimal(str(usage["cost"])) == cost > 0
    content = [e for e in events[:-2] if e["choices"]]
    assert all(e["id"] == generation_id and e["model"] == "test/paid" for e in content)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in content)
    assert text.startswith("This is a simulated reply")
    state = await account_state(client, account_id)
    assert Decimal(state["balance"]) == Decimal("1.00") - cost
    record = await generation_record(client, key, generation_id)
    assert record["streamed"] is True and record["cancelled"] is False
    assert record["finish_reason"] == "stop"


async def test_client_disconnect_cancels_upstream_and_charges_what_was_generated(
    client: TestClient, provider: ThreadedServer
) -> None:
    account_id, key = await new_account(client, purchase="1.00")
    async with aiohttp.ClientSession() as session:
        stats_before = await (await session.get(provider.url + "/_sim/stats")).json()
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/slowstream", stream=True), headers=bearer(key)
    )
    generation_id = resp.headers["X-Generation-Id"]
    seen = 0
    async for line in resp.content:
        if line.startswith(b"data:"):
            seen += 1
        if seen >= 5:
            break
    resp.close()  # the client goes away mid-stream

    record = await generation_record(client, key, generation_id)
    assert record["cancelled"] is True and record["streamed"] is True, str(record)
    assert 5 <= record["tokens_completion"] < 100  # 400 words were coming, 20 ms apart
    expected = (
        record["tokens_prompt"] * PROMPT_PRICE + record["tokens_completion"] * COMPLETION_PRICE
    )
    assert Decimal(record["total_cost_usd"]) == expected
    state = await account_state(client, account_id)
    assert Decimal(state["balance"]) == Decimal("1.00") - expected
    assert state["reserved"] == "0.00"
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            stats = await (await session.get(provider.url + "/_sim/stats")).json()
            if stats["streams_aborted"] > stats_before["streams_aborted"]:
                break
            await asyncio.sleep(0.05)
    assert stats["streams_aborted"] > stats_before["streams_aborted"]
    assert stats["streams_completed"] == stats_before["streams_completed"]


async def test_provider_breaking_off_mid_stream_ends_with_an_error_chunk(
    client: TestClient,
) -> None:
    account_id, key = await new_account(client, purchase="1.00")
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/drop", stream=True), headers=bearer(key)
    )
    assert resp.status == 200
    events = await read_events(resp)
    assert events[-1] == "[DONE]"
    errors = [e for e in events[:-1] if "error" in e]
    assert len(errors) == 1
    assert errors[0]["choices"][0]["finish_reason"] == "error"
    assert errors[0]["error"]["metadata"]["error_type"] == "provider_error"
    usage = events[-2]["usage"]
    assert usage["completion_tokens"] == 2  # two chunks arrived before the drop
    assert usage["cost"] == 0  # an error finish: zero completion insurance (test_insurance.py)
    state = await account_state(client, account_id)
    assert state["balance"] == "1.00"


async def test_stream_without_provider_usage_is_charged_by_chunks(client: TestClient) -> None:
    _, key = await new_account(client, purchase="1.00")
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/nousage", stream=True), headers=bearer(key)
    )
    events = await read_events(resp)
    usage = events[-2]["usage"]
    assert usage["completion_tokens"] == 16  # one per content chunk
    assert usage["cost"] > 0
    record = await generation_record(client, key, resp.headers["X-Generation-Id"])
    assert record["usage_source"] == "estimated"


async def test_stream_refused_before_it_starts_is_a_json_error(client: TestClient) -> None:
    _, key = await new_account(client, purchase="1.00")
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/error-500", stream=True), headers=bearer(key)
    )
    assert resp.status == 502
    assert (await resp.json())["error"]["metadata"]["error_type"] == "provider_error"


async def test_a_long_stream_keeps_its_reservation(
    redis_url: str, provider: ThreadedServer
) -> None:
    from aiohttp.test_utils import TestServer

    from gateway.app import create_app
    from tests.support import make_settings

    app = create_app(make_settings(redis_url, provider.url, reservation_timeout_seconds=1))
    async with TestClient(TestServer(app)) as c:
        account_id, key = await new_account(c, purchase="1.00")
        resp = await c.post(
            "/api/v1/chat/completions",
            json=chat("test/slowstream", stream=True),
            headers=bearer(key),
        )
        assert resp.status == 200
        await resp.content.readline()
        await asyncio.sleep(2.5)  # more than twice the reservation timeout
        free = await c.post(
            "/api/v1/chat/completions", json=chat("test/free:free"), headers=bearer(key)
        )
        assert free.status == 200  # this admission sweeps expired reservations
        state = await account_state(c, account_id)
        assert Decimal(state["reserved"]) > 0  # the stream's is still held
        resp.close()
        for _ in range(100):
            state = await account_state(c, account_id)
            if state["reserved"] == "0.00":
                break
            await asyncio.sleep(0.05)
        assert state["reserved"] == "0.00"
