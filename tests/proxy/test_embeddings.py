"""The embeddings API through the same pipeline as chat: the official `openai` client, the charge
exact to the nanodollar at the model's prompt price, base64 passed through, no zero completion
insurance, bad bodies refused with nothing reserved, the record and Activity as for chat."""

import base64
import struct
from decimal import Decimal
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient

from tests.support import PROMPT_PRICE, account_state, bearer, generation_record, new_account


def _client(client: TestClient, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=str(client.make_url("/api/v1")), api_key=key, max_retries=0, timeout=20
    )


@pytest.mark.parametrize(
    ("given", "vectors", "tokens"),
    [
        ("the quick brown fox jumps", 1, 7),  # 25 characters: ceil(25 / 4)
        (["one", "two three four"], 2, 1 + 4),
        ([1, 2, 3, 4, 5], 1, 5),  # token ids count one each
        ([[1, 2], [3, 4, 5]], 2, 5),
    ],
)
async def test_embeddings_are_charged_their_input(
    client: TestClient, given: Any, vectors: int, tokens: int
) -> None:
    account_id, key = await new_account(client, purchase="1.00")
    async with _client(client, key) as oa:
        raw = await oa.embeddings.with_raw_response.create(model="test/paid", input=given)
        answer = raw.parse()
    assert len(answer.data) == (
        len(given) if isinstance(given[0], (str, list)) and isinstance(given, list) else 1
    )
    assert answer.model == "test/paid" and answer.usage.prompt_tokens == tokens
    cost = tokens * PROMPT_PRICE
    assert Decimal(str(answer.usage.model_extra["cost"])) == cost  # type: ignore[index]
    record = await generation_record(client, key, raw.headers["x-generation-id"])
    assert record["tokens_prompt"] == tokens and record["tokens_completion"] == 0
    assert (
        Decimal(record["total_cost_usd"]) == cost and record["zero_completion_insurance"] is False
    )
    state = await account_state(client, account_id)
    assert Decimal(state["balance"]) == Decimal("1.00") - cost and state["reserved"] == "0.00"


async def test_base64_passes_through(client: TestClient) -> None:
    _, key = await new_account(client, purchase="1.00")
    resp = await client.post(
        "/v1/embeddings",
        json={"model": "test/paid", "input": "hello", "encoding_format": "base64"},
        headers=bearer(key),
    )
    assert resp.status == 200
    body = await resp.json()
    vector = struct.unpack("<8f", base64.b64decode(body["data"][0]["embedding"]))
    assert len(vector) == 8 and body["usage"]["cost"] > 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "test/paid"}, "input"),
        ({"model": "test/paid", "input": ""}, "input"),
        ({"model": "test/paid", "input": [1, "a"]}, "input"),
        ({"model": "test/paid", "input": {"text": "a"}}, "input"),
        ({"model": "test/paid", "input": "a", "stream": True}, "stream"),
        ({"input": "a"}, "model"),
    ],
)
async def test_bad_bodies_are_400s_with_nothing_reserved(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    account_id, key = await new_account(client, purchase="1.00")
    resp = await client.post("/api/v1/embeddings", json=body, headers=bearer(key))
    assert resp.status == 400
    assert (await resp.json())["error"]["metadata"]["field"] == field
    state = await account_state(client, account_id)
    assert state["balance"] == "1.00" and state["reserved"] == "0.00"


async def test_embeddings_count_in_activity_and_need_credit(client: TestClient) -> None:
    _, key = await new_account(client, purchase="1.00")
    for _ in range(3):
        resp = await client.post(
            "/api/v1/embeddings", json={"model": "test/paid", "input": "abcd"}, headers=bearer(key)
        )
        assert resp.status == 200
    activity = await (await client.get("/api/v1/activity", headers=bearer(key))).json()
    totals = activity["data"]["totals"]
    assert totals["requests"] == 3 and Decimal(totals["spend"]) == 3 * PROMPT_PRICE
    _, broke = await new_account(client)  # nothing bought: a paid model's embedding is a 402
    resp = await client.post(
        "/api/v1/embeddings", json={"model": "test/paid", "input": "abcd"}, headers=bearer(broke)
    )
    assert resp.status == 402
