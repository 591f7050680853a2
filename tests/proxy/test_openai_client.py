"""The official `openai` client, pointed at the gateway, just works: plain, streaming, errors."""

from decimal import Decimal

import openai
import pytest
from aiohttp.test_utils import TestClient

from tests.support import COMPLETION_PRICE, PROMPT_PRICE, account_state, new_account


def _client(client: TestClient, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=str(client.make_url("/api/v1")), api_key=key, max_retries=0, timeout=20
    )


async def test_openai_client_non_streaming(client: TestClient) -> None:
    account_id, key = await new_account(client, purchase="2.00")
    async with _client(client, key) as oa:
        raw = await oa.chat.completions.with_raw_response.create(
            model="test/paid", messages=[{"role": "user", "content": "Hello there"}]
        )
        completion = raw.parse()
    assert raw.headers["x-generation-id"] == completion.id
    assert completion.choices[0].message.content.startswith("This is a simulated reply")
    usage = completion.usage
    assert usage is not None
    cost = Decimal(str(usage.model_extra["cost"]))  # type: ignore[index]
    assert cost == usage.prompt_tokens * PROMPT_PRICE + usage.completion_tokens * COMPLETION_PRICE
    assert Decimal((await account_state(client, account_id))["balance"]) == Decimal("2.00") - cost


async def test_openai_client_streaming_gets_usage_last(client: TestClient) -> None:
    _, key = await new_account(client, purchase="2.00")
    async with _client(client, key) as oa:
        stream = await oa.chat.completions.create(
            model="test/paid", messages=[{"role": "user", "content": "Hello there"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("This is a simulated reply")
    last = chunks[-1]
    assert last.usage is not None and last.usage.completion_tokens == 16
    assert last.usage.model_extra["cost"] > 0  # type: ignore[index]
    assert len({c.id for c in chunks}) == 1


async def test_openai_client_sees_402_as_an_api_error(client: TestClient) -> None:
    _, key = await new_account(client)
    async with _client(client, key) as oa:
        with pytest.raises(openai.APIStatusError) as caught:
            await oa.chat.completions.create(
                model="test/paid", messages=[{"role": "user", "content": "hi"}]
            )
    assert caught.value.status_code == 402
    assert "requires more credits" in caught.value.message
