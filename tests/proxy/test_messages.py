"""Anthropic's Messages API through the shared pipeline, with the official `anthropic` client:
our key as `x-api-key` or Bearer, the provider's key as `x-api-key`, `anthropic-version` and
`anthropic-beta` passed on, exact cost with cache writes and reads at their prices, streamed or
not, a hang-up mid stream charged from the provider's own prompt count, and errors in
Anthropic's shape with nothing reserved."""

import math
from decimal import Decimal
from typing import Any

import aiohttp
import anthropic
import pytest
from aiohttp.test_utils import TestClient

from gateway.runtime.simulated_basics import REPLY
from tests.support import (
    CACHE_READ_PRICE,
    CACHE_WRITE_PRICE,
    COMPLETION_PRICE,
    PROMPT_PRICE,
    ThreadedServer,
    account_state,
    bearer,
    chat,
    generation_record,
    hang_up_after,
    new_account,
    settled_state,
)

TEXT = " ".join(REPLY)
HELLO = [{"role": "user", "content": "Hello there"}]
HELLO_TOKENS = math.ceil(len("Hello there") / 4) + 3  # as the simulated provider counts


def _client(client: TestClient, key: str, **kw: Any) -> anthropic.AsyncAnthropic:
    """The SDK appends /v1/messages to its base URL: /api/v1/messages here."""
    return anthropic.AsyncAnthropic(
        base_url=str(client.make_url("/api")), max_retries=0, timeout=20, **{"api_key": key, **kw}
    )


async def _get(provider: ThreadedServer, path: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(provider.url + path) as r:
        data: dict[str, Any] = await r.json()
        return data


async def test_a_message_is_charged_exactly(client: TestClient, provider: ThreadedServer) -> None:
    account_id, key = await new_account(client, purchase="1.00")
    before = await _get(provider, "/_sim/stats")
    async with _client(client, key) as claude:
        raw = await claude.messages.with_raw_response.create(
            model="test/paid",
            max_tokens=100,
            messages=HELLO,  # type: ignore[arg-type]
        )
        message = await raw.parse()
    assert message.content[0].text == TEXT  # type: ignore[union-attr]
    assert message.model == "test/paid" and message.stop_reason == "end_turn"
    assert message.id == raw.headers["x-generation-id"]
    assert message.usage.input_tokens == HELLO_TOKENS
    cost = HELLO_TOKENS * PROMPT_PRICE + len(REPLY) * COMPLETION_PRICE
    assert Decimal(str(message.usage.model_extra["cost"])) == cost  # type: ignore[index]
    record = await generation_record(client, key, message.id)
    assert Decimal(record["total_cost_usd"]) == cost and record["finish_reason"] == "stop"
    state = await account_state(client, account_id)
    assert Decimal(state["balance"]) == Decimal("1.00") - cost and state["reserved"] == "0.00"
    # The provider got its own key as x-api-key (never as Bearer) and the SDK's version.
    after, seen = await _get(provider, "/_sim/stats"), await _get(provider, "/_sim/seen")
    assert after["x_api_key"] == before["x_api_key"] + 1
    assert after["bearer_on_messages"] == 0 and after["last_max_tokens"] == 100
    assert seen["anthropic-version"] == anthropic._client.ANTHROPIC_API_VERSION  # the SDK's


async def test_bearer_keys_and_beta_headers_work_too(
    client: TestClient, provider: ThreadedServer
) -> None:
    _, key = await new_account(client, purchase="1.00")
    async with anthropic.AsyncAnthropic(
        base_url=str(client.make_url("")), auth_token=key, max_retries=0, timeout=20
    ) as claude:  # /v1/messages, the key as a Bearer token
        message = await claude.messages.create(
            model="test/paid",
            max_tokens=10,
            messages=HELLO,  # type: ignore[arg-type]
            extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
        )
    assert message.usage.output_tokens == 10 and message.stop_reason == "max_tokens"
    assert (await _get(provider, "/_sim/seen"))["anthropic-beta"] == "prompt-caching-2024-07-31"
    # A client that sends no version (curl) gets Anthropic's first, which providers take.
    resp = await client.post(
        "/v1/messages",
        json={"model": "test/paid", "max_tokens": 5, "messages": HELLO},
        headers={"x-api-key": key},
    )
    assert resp.status == 200
    assert (await _get(provider, "/_sim/seen"))["anthropic-version"] == "2023-06-01"


async def test_a_streamed_message_carries_its_cost_in_message_delta(client: TestClient) -> None:
    account_id, key = await new_account(client, purchase="1.00")
    async with _client(client, key) as claude:
        stream = await claude.messages.create(
            model="test/paid",
            max_tokens=100,
            messages=HELLO,  # type: ignore[arg-type]
            system="Be brief.",
            stream=True,
            metadata={"user_id": "u-42"},
        )
        events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")  # type: ignore[union-attr]
    assert text == TEXT
    start = events[0].message  # type: ignore[union-attr]
    prompt = HELLO_TOKENS + math.ceil(len("Be brief.") / 4)
    assert start.model == "test/paid" and start.usage.input_tokens == prompt
    delta = events[-2]
    cost = prompt * PROMPT_PRICE + len(REPLY) * COMPLETION_PRICE
    assert Decimal(str(delta.usage.model_extra["cost"])) == cost  # type: ignore[union-attr]
    record = await generation_record(client, key, start.id)
    assert record["streamed"] is True and Decimal(record["total_cost_usd"]) == cost
    assert record["upstream_id"].startswith("msg_sim") and record["external_user"] == "u-42"
    assert record["finish_reason"] == "stop" and record["native_finish_reason"] == "end_turn"
    state = await account_state(client, account_id)
    assert Decimal(state["balance"]) == Decimal("1.00") - cost and state["reserved"] == "0.00"


@pytest.mark.parametrize("stream", [False, True])
async def test_cache_writes_and_reads_are_charged_at_their_prices(
    client: TestClient, stream: bool
) -> None:
    _, key = await new_account(client, purchase="1.00")
    body = {"model": "test/cache", "max_tokens": 100, "messages": HELLO, "stream": stream}
    resp = await client.post("/v1/messages", json=body, headers={"x-api-key": key})
    assert resp.status == 200
    await resp.read()
    record = await generation_record(client, key, resp.headers["X-Generation-Id"])
    cost = (
        HELLO_TOKENS * PROMPT_PRICE
        + 50 * CACHE_WRITE_PRICE
        + 100 * CACHE_READ_PRICE
        + len(REPLY) * COMPLETION_PRICE
    )
    assert record["tokens_prompt"] == HELLO_TOKENS + 150
    assert record["native_tokens_cached"] == 100
    assert Decimal(record["total_cost_usd"]) == cost


async def test_a_hang_up_mid_stream_is_charged_the_providers_prompt(client: TestClient) -> None:
    account_id, key = await new_account(client, purchase="1.00")
    body = {"model": "test/slowstream", "max_tokens": 1000, "messages": HELLO, "stream": True}
    resp = await client.post("/api/v1/messages", json=body, headers={"x-api-key": key})
    assert resp.status == 200
    await hang_up_after(resp, b"content_block_delta", 5)
    record = await generation_record(client, key, resp.headers["X-Generation-Id"])
    assert record["cancelled"] is True
    assert record["tokens_prompt"] == HELLO_TOKENS  # told by message_start, not estimated
    assert 5 <= record["tokens_completion"] < 400
    state = await settled_state(client, account_id)
    assert Decimal(state["balance"]) == Decimal("1.00") - Decimal(record["total_cost_usd"])


async def test_an_error_mid_stream_is_passed_on_and_insured(client: TestClient) -> None:
    _, key = await new_account(client, purchase="1.00")
    async with _client(client, key) as claude:
        stream = await claude.messages.create(
            model="test/errorchunk",
            max_tokens=100,
            messages=HELLO,  # type: ignore[arg-type]
            stream=True,
        )
        with pytest.raises(anthropic.APIStatusError) as broke:
            async for _ in stream:
                pass
    assert "failed mid stream" in str(broke.value)
    generation = stream.response.headers["x-generation-id"]
    record = await generation_record(client, key, generation)
    assert record["zero_completion_insurance"] is True and record["total_cost_usd"] == "0.00"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"model": "test/paid", "messages": HELLO}, "max_tokens"),
        ({"model": "test/paid", "max_tokens": 10, "messages": []}, "messages"),
        ({"model": "test/paid", "max_tokens": 10, "messages": [{"role": "x"}]}, "role"),
        ({"model": "test/paid", "max_tokens": 10, "messages": HELLO, "temperature": 2}, "temp"),
        ({"max_tokens": 10, "messages": HELLO}, "model"),
    ],
)
async def test_bad_bodies_are_anthropic_shaped_400s(
    client: TestClient, body: dict[str, Any], words: str
) -> None:
    account_id, key = await new_account(client, purchase="1.00")
    resp = await client.post("/v1/messages", json=body, headers={"x-api-key": key})
    assert resp.status == 400
    error = await resp.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert words in error["error"]["message"]
    state = await account_state(client, account_id)
    assert state["balance"] == "1.00" and state["reserved"] == "0.00"


async def test_refusals_reach_the_sdk_as_its_own_errors(client: TestClient) -> None:
    async with _client(client, "sk-gw-v1-not-a-key") as claude:
        with pytest.raises(anthropic.AuthenticationError) as unknown:
            await claude.messages.create(model="test/paid", max_tokens=5, messages=HELLO)  # type: ignore[arg-type]
    assert unknown.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    _, broke = await new_account(client)
    async with _client(client, broke) as claude:
        with pytest.raises(anthropic.APIStatusError) as poor:
            await claude.messages.create(model="test/paid", max_tokens=5, messages=HELLO)  # type: ignore[arg-type]
        assert poor.value.status_code == 402
        assert poor.value.body["error"]["type"] == "billing_error"  # type: ignore[index]
        with pytest.raises(anthropic.NotFoundError):
            await claude.messages.create(model="test/none", max_tokens=5, messages=HELLO)  # type: ignore[arg-type]
    _, key = await new_account(client, purchase="1.00")
    resp = await client.post(
        "/v1/messages",
        json={"model": "test/error-500", "max_tokens": 5, "messages": HELLO},
        headers={"x-api-key": key},
    )
    assert resp.status == 502 and (await resp.json())["error"]["type"] == "api_error"


async def test_free_model_limits_count_every_api_alike(client: TestClient) -> None:
    _, key = await new_account(client)
    first = await client.post(
        "/api/v1/chat/completions", json=chat("test/free:free"), headers=bearer(key)
    )
    second = await client.post(
        "/api/v1/messages",
        json={"model": "test/free:free", "max_tokens": 5, "messages": HELLO},
        headers={"x-api-key": key},
    )
    assert first.status == second.status == 200
    left = [int(r.headers["X-RateLimit-Remaining"]) for r in (first, second)]
    assert left[1] == left[0] - 1


async def test_every_api_counts_in_activity(client: TestClient) -> None:
    """A message and a response land in Activity beside a chat completion, each at its cost."""
    _, key = await new_account(client, purchase="1.00")
    costs = []
    calls = (
        ("/api/v1/chat/completions", chat("test/paid")),
        ("/api/v1/responses", {"model": "test/paid", "input": "Hello there"}),
        ("/api/v1/messages", {"model": "test/paid", "max_tokens": 50, "messages": HELLO}),
    )
    for path, body in calls:
        resp = await client.post(path, json=body, headers=bearer(key))
        assert resp.status == 200
        costs.append(Decimal(str((await resp.json())["usage"]["cost"])))
    activity = await (await client.get("/api/v1/activity", headers=bearer(key))).json()
    totals = activity["data"]["totals"]
    assert totals["requests"] == 3 and Decimal(totals["spend"]) == sum(costs)
