"""Model fallbacks (`models`, OpenRouter's shape): tried in order when the model before fails
before any output; the answer and the charge are the model that served; the routing fields never
reach a provider (the simulated provider refuses them, as OpenAI does unknown arguments); one
reservation covers the costliest candidate."""

import asyncio
from decimal import Decimal
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient

from tests.sse import read_events
from tests.support import (
    COMPLETION_PRICE,
    PROMPT_PRICE,
    account_state,
    bearer,
    chat,
    generation_record,
    new_account,
    settled_state,
)

PAID_PRICE = (PROMPT_PRICE, COMPLETION_PRICE)
PRICEY_PRICE = (PROMPT_PRICE * 100, COMPLETION_PRICE * 100)


def _cost(record: dict[str, Any], prices: tuple[Decimal, Decimal]) -> Decimal:
    return record["tokens_prompt"] * prices[0] + record["tokens_completion"] * prices[1]


async def _ask(client: TestClient, key: str, body: dict[str, Any]) -> tuple[int, Any, str]:
    resp = await client.post("/api/v1/chat/completions", json=body, headers=bearer(key))
    if body.get("stream") and resp.status == 200:
        events = await read_events(resp)
        return resp.status, events, resp.headers["X-Generation-Id"]
    return resp.status, await resp.json(), resp.headers.get("X-Generation-Id", "")


@pytest.mark.parametrize(
    ("failing", "status"),
    [
        ("test/error-500", 500),  # the provider fails
        ("test/error-429", 429),  # it is rate limited
        ("test/error-400", 400),  # it refuses the request: a context that is too long
        ("test/unreachable", "connect"),
    ],
)
async def test_the_next_model_serves_and_is_charged(
    client: TestClient, failing: str, status: int | str
) -> None:
    account_id, key = await new_account(client, purchase="1.00")
    body = chat(failing, models=[failing, "test/paid"], route="fallback")
    code, answer, generation_id = await _ask(client, key, body)
    assert code == 200, answer
    assert answer["model"] == "test/paid"
    record = await generation_record(client, key, generation_id)
    assert record["model"] == "test/paid" and record["provider_name"] == "sim"
    assert record["failed_attempts"][0]["model"] == failing
    assert record["failed_attempts"][0]["status"] == status
    cost = _cost(record, PAID_PRICE)
    assert Decimal(record["total_cost_usd"]) == cost > 0
    balance = Decimal((await account_state(client, account_id))["balance"])
    assert balance == Decimal("1.00") - cost


async def test_a_stream_falls_back_before_its_first_byte(client: TestClient) -> None:
    _, key = await new_account(client, purchase="1.00")
    body = chat("test/error-500", stream=True, models=["test/pricey"])
    code, events, generation_id = await _ask(client, key, body)
    assert code == 200
    assert {e["model"] for e in events[:-1]} == {"test/pricey"}
    record = await generation_record(client, key, generation_id)
    assert record["model"] == "test/pricey" and len(record["failed_attempts"]) == 1
    assert Decimal(record["total_cost_usd"]) == _cost(record, PRICEY_PRICE)


async def test_the_last_models_error_is_the_answer(client: TestClient) -> None:
    account_id, key = await new_account(client, purchase="1.00")
    body = chat("test/error-500", models=["test/error-400"])
    code, answer, _ = await _ask(client, key, body)
    assert code == 400 and "context is too small" in answer["error"]["message"]
    state = await account_state(client, account_id)
    assert state["balance"] == "1.00" and state["reserved"] == "0.00"


async def test_models_alone_names_the_model_and_unknown_fallbacks_are_skipped(
    client: TestClient,
) -> None:
    _, key = await new_account(client, purchase="1.00")
    body = chat("x", models=["test/error-500", "no/such-model", "test/paid"])
    del body["model"]
    code, answer, generation_id = await _ask(client, key, body)
    assert code == 200 and answer["model"] == "test/paid"
    record = await generation_record(client, key, generation_id)
    assert [a["model"] for a in record["failed_attempts"]] == ["test/error-500"]
    unknown = chat("no/such-model", models=["test/paid"])
    assert (await _ask(client, key, unknown))[0] == 404  # the model asked for must exist


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"models": "test/paid"}, "models"),
        ({"models": []}, "models"),
        ({"models": [1]}, "models"),
        ({"models": ["a", "b", "c", "d"]}, "models"),
        ({"route": "cheapest"}, "route"),
    ],
)
async def test_bad_routing_fields_are_400s(
    client: TestClient, fields: dict[str, Any], field: str
) -> None:
    _, key = await new_account(client, purchase="1.00")
    code, answer, _ = await _ask(client, key, chat("test/paid", **fields))
    assert code == 400 and answer["error"]["metadata"]["field"] == field


async def test_the_reservation_covers_the_costliest_candidate(client: TestClient) -> None:
    """Enough for test/paid's worst case, not for test/pricey's: refused with models, since the
    pricey fallback may be what answers."""
    _, key = await new_account(client, grant="0.01")
    assert (await _ask(client, key, chat("test/paid", max_tokens=1000)))[0] == 200
    body = chat("test/paid", max_tokens=1000, models=["test/pricey"])
    code, answer, _ = await _ask(client, key, body)
    assert code == 402, answer
    assert answer["error"]["metadata"]["reason"] == "insufficient_credits"


async def test_racing_fallbacks_never_overspend(client: TestClient) -> None:
    """200 requests at once, each falling back from a failing model to the pricey one, on an
    account that can afford a few: none is charged past what it reserved, the balance never goes
    below zero, and what the records charged is what left the balance. The grant is below what
    all 200 would cost even at their actual price (about $0.001 each), so some are refused
    however the requests interleave."""
    account_id, key = await new_account(client, grant="0.10")
    body = chat("test/error-500", max_tokens=20, models=["test/pricey"])

    async def one() -> tuple[int, str]:
        resp = await client.post("/api/v1/chat/completions", json=body, headers=bearer(key))
        await resp.read()
        return resp.status, resp.headers.get("X-Generation-Id", "")

    results = await asyncio.gather(*(one() for _ in range(200)))
    assert {status for status, _ in results} <= {200, 402}
    served = [g for status, g in results if status == 200]
    assert 0 < len(served) < 200
    records = [await generation_record(client, key, g) for g in served]
    charged = sum((Decimal(r["total_cost_usd"]) for r in records), Decimal(0))
    state = await settled_state(client, account_id)  # leases given back
    assert Decimal(state["balance"]) == Decimal("0.10") - charged >= 0
    assert state["reserved"] == "0.00"
    assert all(r["model"] == "test/pricey" for r in records)


async def test_the_openai_client_passes_fallbacks_in_extra_body(client: TestClient) -> None:
    _, key = await new_account(client, purchase="1.00")
    async with openai.AsyncOpenAI(
        base_url=str(client.make_url("/api/v1")), api_key=key, max_retries=0, timeout=20
    ) as oa:
        completion = await oa.chat.completions.create(
            model="test/error-500",
            messages=[{"role": "user", "content": "Hello there"}],
            extra_body={"models": ["test/paid"], "provider": {"allow_fallbacks": True}},
        )
    assert completion.model == "test/paid"
    assert completion.choices[0].message.content.startswith("This is a simulated reply")
