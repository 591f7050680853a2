"""OpenAI's Responses API through the shared pipeline, with the official `openai` client:
exact cost in `usage.cost` (cached input at its price), streamed or not, the provider's response
id and `previous_response_id` passed through, `max_output_tokens` as the worst case, a hang-up
mid stream charged for what was generated, bad bodies refused with nothing reserved."""

import math
from decimal import Decimal
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp.test_utils import TestClient

from gateway.runtime.simulated_basics import REPLY
from tests.support import (
    CACHE_READ_PRICE,
    COMPLETION_PRICE,
    IMAGE_PRICE,
    PROMPT_PRICE,
    ThreadedServer,
    account_state,
    bearer,
    generation_record,
    hang_up_after,
    new_account,
    settled_state,
)

TEXT = " ".join(REPLY)


def _client(client: TestClient, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=str(client.make_url("/api/v1")), api_key=key, max_retries=0, timeout=20
    )


def _input_tokens(text: str) -> int:
    """What the simulated provider counts for a string input."""
    return math.ceil(len(text) / 4)


async def _seen(provider: ThreadedServer) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(provider.url + "/_sim/seen") as r:
        seen: dict[str, Any] = await r.json()
        return seen


async def _stats(provider: ThreadedServer) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(provider.url + "/_sim/stats") as r:
        stats: dict[str, Any] = await r.json()
        return stats


async def test_a_response_is_charged_exactly_and_keeps_the_providers_id(
    client: TestClient, provider: ThreadedServer
) -> None:
    account_id, key = await new_account(client, purchase="1.00")
    words = "What is the capital of France, in one word?"
    async with _client(client, key) as oa:
        raw = await oa.responses.with_raw_response.create(
            model="test/paid", input=words, instructions="Be brief."
        )
        answer = raw.parse()
    prompt = math.ceil((len(words) + len("Be brief.")) / 4)
    assert answer.output_text == TEXT and answer.model == "test/paid"
    assert answer.id.startswith("resp_sim")  # the provider's: its state is keyed by it
    assert answer.usage is not None
    assert answer.usage.input_tokens == prompt and answer.usage.output_tokens == len(REPLY)
    cost = prompt * PROMPT_PRICE + len(REPLY) * COMPLETION_PRICE
    assert Decimal(str(answer.usage.model_extra["cost"])) == cost  # type: ignore[index]
    record = await generation_record(client, key, raw.headers["x-generation-id"])
    assert record["tokens_prompt"] == prompt and record["tokens_completion"] == len(REPLY)
    assert Decimal(record["total_cost_usd"]) == cost and record["finish_reason"] == "stop"
    state = await account_state(client, account_id)
    assert Decimal(state["balance"]) == Decimal("1.00") - cost and state["reserved"] == "0.00"
    # The provider was asked for no more than the model's cap (1000), as admission reserved.
    assert (await _stats(provider))["last_max_tokens"] == 1000


async def test_a_streamed_response_ends_with_its_cost(client: TestClient) -> None:
    account_id, key = await new_account(client, purchase="1.00")
    async with _client(client, key) as oa:
        stream = await oa.responses.create(
            model="test/paid", input="Tell me a story.", stream=True, max_output_tokens=5
        )
        events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.incomplete"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == " ".join(REPLY[:5])
    last = events[-1].response  # type: ignore[union-attr]
    assert last.model == "test/paid" and last.incomplete_details is not None
    prompt = _input_tokens("Tell me a story.")
    cost = prompt * PROMPT_PRICE + 5 * COMPLETION_PRICE
    assert last.usage is not None
    assert Decimal(str(last.usage.model_extra["cost"])) == cost  # type: ignore[index]
    generation = stream.response.headers["x-generation-id"]
    record = await generation_record(client, key, generation)
    assert record["streamed"] is True and record["finish_reason"] == "length"
    assert record["native_finish_reason"] == "max_output_tokens"
    assert record["upstream_id"] == last.id  # the provider's response id
    assert Decimal(record["total_cost_usd"]) == cost
    state = await account_state(client, account_id)
    assert Decimal(state["balance"]) == Decimal("1.00") - cost and state["reserved"] == "0.00"


async def test_previous_response_id_and_store_pass_through(
    client: TestClient, provider: ThreadedServer
) -> None:
    account_id, key = await new_account(client, purchase="1.00")
    async with _client(client, key) as oa:
        first = await oa.responses.create(model="test/paid", input="Remember the number 7.")
        second = await oa.responses.create(
            model="test/paid", input="Which number?", previous_response_id=first.id, store=False
        )
        assert second.previous_response_id == first.id and second.store is False
        assert (await _seen(provider))["previous_response_id"] == first.id
        before = await account_state(client, account_id)
        with pytest.raises(openai.BadRequestError) as refused:
            await oa.responses.create(
                model="test/paid", input="Which?", previous_response_id=second.id
            )
    assert "not found" in str(refused.value)  # store: false was honoured by the provider
    after = await account_state(client, account_id)
    assert after["balance"] == before["balance"] and after["reserved"] == "0.00"


async def test_cached_input_is_charged_at_the_cache_read_price(client: TestClient) -> None:
    _, key = await new_account(client, purchase="1.00")
    words = "a long and stable system prompt " * 20  # 640 characters: 160 tokens
    async with _client(client, key) as oa:
        answer = await oa.responses.create(model="test/cache", input=words)
    prompt = _input_tokens(words)
    assert answer.usage is not None
    assert answer.usage.input_tokens_details.cached_tokens == 100
    cost = (prompt - 100) * PROMPT_PRICE + 100 * CACHE_READ_PRICE + len(REPLY) * COMPLETION_PRICE
    assert Decimal(str(answer.usage.model_extra["cost"])) == cost  # type: ignore[index]


async def test_a_hang_up_mid_stream_is_charged_for_what_was_generated(
    client: TestClient,
) -> None:
    account_id, key = await new_account(client, purchase="1.00")
    body = {"model": "test/slowstream", "input": "Talk.", "stream": True}
    resp = await client.post("/api/v1/responses", json=body, headers=bearer(key))
    assert resp.status == 200
    generation = resp.headers["X-Generation-Id"]
    await hang_up_after(resp, b"output_text.delta", 5)
    record = await generation_record(client, key, generation)
    assert record["cancelled"] is True and record["finish_reason"] == "cancelled"
    whole = _input_tokens("Talk.") * PROMPT_PRICE + 400 * COMPLETION_PRICE
    assert 0 < Decimal(record["total_cost_usd"]) < whole
    assert 5 <= record["tokens_completion"] < 400
    state = await settled_state(client, account_id)
    assert Decimal(state["balance"]) == Decimal("1.00") - Decimal(record["total_cost_usd"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "test/paid"}, "input"),
        ({"model": "test/paid", "input": 7}, "input"),
        ({"model": "test/paid", "input": ["a"]}, "input"),
        ({"model": "test/paid", "input": "a", "background": True}, "background"),
        ({"model": "test/paid", "input": "a", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "test/paid", "input": "a", "temperature": 3}, "temperature"),
        ({"model": "test/paid", "input": "a", "stream": "yes"}, "stream"),
        ({"model": "test/paid", "input": "a", "previous_response_id": {}}, "previous_response_id"),
        ({"model": "test/paid", "input": "a", "store": "no"}, "store"),
        ({"input": "a"}, "model"),
    ],
)
async def test_bad_bodies_are_400s_with_nothing_reserved(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    account_id, key = await new_account(client, purchase="1.00")
    resp = await client.post("/v1/responses", json=body, headers=bearer(key))
    assert resp.status == 400
    assert (await resp.json())["error"]["metadata"]["field"] == field
    state = await account_state(client, account_id)
    assert state["balance"] == "1.00" and state["reserved"] == "0.00"


async def test_credit_and_errors_are_as_for_chat(client: TestClient) -> None:
    _, key = await new_account(client)  # no credit
    async with _client(client, key) as oa:
        with pytest.raises(openai.APIStatusError) as refused:
            await oa.responses.create(model="test/paid", input="hi")
    assert refused.value.status_code == 402
    _, key = await new_account(client, purchase="1.00")
    resp = await client.post(
        "/api/v1/responses", json={"model": "test/error-500", "input": "hi"}, headers=bearer(key)
    )
    assert resp.status == 502
    assert orjson.loads(await resp.read())["error"]["metadata"]["provider_name"] == "sim"


async def test_an_input_image_is_charged_the_models_image_price(client: TestClient) -> None:
    _, key = await new_account(client, purchase="1.00")
    items = [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is in this picture?"},
                {"type": "input_image", "image_url": "data:image/png;base64," + "A" * 400},
            ],
        }
    ]
    async with _client(client, key) as oa:
        answer = await oa.responses.create(model="test/vision", input=items)  # type: ignore[arg-type]
    prompt = math.ceil(len(orjson.dumps(items)) / 4)  # as the simulated provider counts
    outputs = min(len(REPLY), 100)
    cost = prompt * PROMPT_PRICE + outputs * COMPLETION_PRICE + IMAGE_PRICE
    assert answer.usage is not None
    assert Decimal(str(answer.usage.model_extra["cost"])) == cost  # type: ignore[index]
