"""Zero completion insurance (billing-rules.md, Responses): an answer with no completion tokens and
no finish reason, or one that ends in an error, costs nothing, prompt included; its record exists,
with cost 0 and `zero_completion_insurance: true`, and Activity counts the request. A client that
hangs up mid stream is still charged (tests/proxy/test_streaming.py)."""

from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.sse import read_events
from tests.support import account_state, bearer, chat, generation_record, new_account

INCLUDE_USAGE = {"stream_options": {"include_usage": True}}


async def _ask(client: TestClient, key: str, model: str, stream: bool) -> tuple[Any, str]:
    """The answer's usage (a stream's last usage chunk) and its generation id."""
    body = chat(model, stream=stream, **(INCLUDE_USAGE if stream else {}))
    resp = await client.post("/api/v1/chat/completions", json=body, headers=bearer(key))
    assert resp.status == 200, await resp.text()
    if stream:
        events = await read_events(resp)
        assert events[-1] == "[DONE]"
        usage = next(e["usage"] for e in reversed(events[:-1]) if e.get("usage"))
    else:
        usage = (await resp.json())["usage"]
    return usage, resp.headers["X-Generation-Id"]


async def _spent(client: TestClient, key: str) -> tuple[Decimal, int]:
    resp = await client.get("/api/v1/activity?granularity=day", headers=bearer(key))
    totals = (await resp.json())["data"]["totals"]
    return Decimal(totals["spend"]), totals["requests"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("model", "reason", "completion"),
    [("test/empty", None, 0), ("test/errorchunk", "error", 2)],
)
async def test_nothing_usable_costs_nothing(
    client: TestClient, stream: bool, model: str, reason: str | None, completion: int
) -> None:
    account_id, key = await new_account(client, purchase="1.00")
    usage, generation_id = await _ask(client, key, model, stream)
    assert usage["cost"] == 0 and usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] == completion
    record = await generation_record(client, key, generation_id)
    assert record["zero_completion_insurance"] is True
    assert record["total_cost"] == 0 and record["total_cost_usd"] == "0.00"
    assert record["finish_reason"] == reason and record["tokens_prompt"] > 0
    state = await account_state(client, account_id)
    assert state["balance"] == "1.00" and state["reserved"] == "0.00"
    assert await _spent(client, key) == (Decimal("0"), 1)  # counted, at no cost
    metrics = await (await client.get("/metrics")).text()
    line = f'gateway_zero_completion_insured_total{{model="{model}",provider="sim"}}'
    assert any(m.startswith(line) and float(m.split()[-1]) >= 1 for m in metrics.splitlines())


async def test_a_stream_the_provider_breaks_off_costs_nothing(client: TestClient) -> None:
    """The gateway's own error chunk (the provider dropped the connection after two chunks)."""
    account_id, key = await new_account(client, purchase="1.00")
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/drop", stream=True), headers=bearer(key)
    )
    events = await read_events(resp)
    assert events[-2]["usage"]["completion_tokens"] == 2 and events[-2]["usage"]["cost"] == 0
    record = await generation_record(client, key, resp.headers["X-Generation-Id"])
    assert record["finish_reason"] == "error" and record["zero_completion_insurance"] is True
    assert (await account_state(client, account_id))["balance"] == "1.00"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_whole_answer_is_charged_and_not_insured(client: TestClient, stream: bool) -> None:
    account_id, key = await new_account(client, purchase="1.00")
    usage, generation_id = await _ask(client, key, "test/paid", stream)
    assert usage["cost"] > 0
    record = await generation_record(client, key, generation_id)
    assert record["zero_completion_insurance"] is False and record["finish_reason"] == "stop"
    balance = Decimal((await account_state(client, account_id))["balance"])
    assert balance == Decimal("1.00") - Decimal(record["total_cost_usd"])
