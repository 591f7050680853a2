"""Token limits through HTTP against a real Redis and the simulated provider: admission reserves a
request's worst case in the window, settlement trues it up to the provider's usage, and a request
that does not fit gets a 429 that says what would."""

import asyncio
import base64
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.clock import Clock, ManualClock
from gateway.limits import LIMITS
from tests.support import (
    ThreadedServer,
    admin_headers,
    bearer,
    chat,
    generation_record,
    hang_up_after,
    make_settings,
    new_account,
    settled_state,
)

MINUTE = 1_795_780_800.0  # 2026-11-27 12:00:00 UTC
MakeClient = Callable[..., Awaitable[TestClient]]


def limit_file(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture
async def make_client(
    redis_url: str, provider: ThreadedServer, tmp_path: Path
) -> AsyncIterator[MakeClient]:
    clients: list[TestClient] = []

    async def make(limits: str, clock: ManualClock | None = None, **overrides: Any) -> TestClient:
        path = limit_file(tmp_path / f"limits-{len(clients)}.toml", limits)
        settings = make_settings(
            redis_url, provider.url, limits_file=str(path), limits_reload_seconds=3600, **overrides
        )
        app = create_app(settings, clock=clock or ManualClock(MINUTE + 10))
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def tokens_limit(tokens: int, count: str = "total", extra: str = "") -> str:
    return f"""\
        [[limits]]
        name = "tpm"
        match = "all"
        unit = "minute"
        tokens = {tokens}
        count = "{count}"
        {extra}
        """


async def post(client: TestClient, key: str, body: dict[str, Any]) -> ClientResponse:
    resp = await client.post("/api/v1/chat/completions", json=body, headers=bearer(key))
    await resp.read()
    return resp


async def window(client: TestClient, key: str, name: str = "tpm") -> dict[str, Any]:
    """The limit as GET /api/v1/key shows it."""
    data = (await (await client.get("/api/v1/key", headers=bearer(key))).json())["data"]
    found: dict[str, Any] = next(s for s in data["rate_limits"] if s["name"] == name)
    return found


async def used_once_settled(client: TestClient, key: str, expected: int) -> int:
    """The window's count once every settlement landed (bounded)."""
    used = -1
    for _ in range(100):
        used = int((await window(client, key))["used"])
        if used == expected:
            return used
        await asyncio.sleep(0.05)
    return used


async def test_a_tokens_per_minute_limit_holds_exactly_under_200_racing_requests(
    make_client: MakeClient,
) -> None:
    # One round trip each (leases need a moving clock: see the busy account's test below).
    client = await make_client(tokens_limit(2000), lease_above_requests_per_second=0)
    account_id, key = await new_account(client, purchase="100.00")

    async def one(i: int) -> tuple[int, dict[str, Any]]:
        resp = await post(client, key, chat("test/paid", f"request {i}", max_tokens=10))
        return resp.status, await resp.json()

    answers = await asyncio.gather(*(one(i) for i in range(200)))
    admitted = [body for status, body in answers if status == 200]
    refused = [body for status, body in answers if status == 429]
    assert len(admitted) + len(refused) == 200
    assert admitted and refused, "the limit must both admit and refuse in this race"
    for body in refused:
        meta = body["error"]["metadata"]
        assert meta["limit"] == "tpm"
        # Refused only when the request's worst case did not fit in what was left.
        assert meta["tokens_requested"] > meta["tokens_remaining"]
    await settled_state(client, account_id)
    actual = sum(body["usage"]["total_tokens"] for body in admitted)
    # Every worst case was trued up to the provider's usage: the window counts exactly what was
    # used, and never more than the limit.
    assert await used_once_settled(client, key, actual) == actual
    assert actual <= 2000
    state = await window(client, key)
    assert state["remaining"] == 2000 - actual and state["limit"] == 2000
    assert (state["kind"], state["count"], state["window"]) == ("tokens", "total", "minute")


async def test_true_up_gives_unused_tokens_back_to_the_window(make_client: MakeClient) -> None:
    client = await make_client(tokens_limit(600))
    account_id, key = await new_account(client, purchase="10.00")
    first = await post(client, key, chat("test/paid", max_tokens=500))
    assert first.status == 200
    used = (await first.json())["usage"]["total_tokens"]
    assert used < 100  # the provider used far less than the worst case of 500 and the prompt
    await settled_state(client, account_id)
    assert await used_once_settled(client, key, used) == used
    # The same request fits again: only what was used stays counted.
    second = await post(client, key, chat("test/paid", max_tokens=500))
    assert second.status == 200, await second.text()


async def test_streams_and_hang_ups_are_counted_from_usage(make_client: MakeClient) -> None:
    client = await make_client(tokens_limit(100_000))
    account_id, key = await new_account(client, purchase="10.00")
    body = chat("test/paid", stream=True, stream_options={"include_usage": True}, max_tokens=50)
    resp = await client.post("/api/v1/chat/completions", json=body, headers=bearer(key))
    text = (await resp.text()).strip().split("\n\n")
    usage = [e for e in text if '"usage":{' in e][-1]
    total = int(usage.split('"total_tokens":')[1].split(",")[0].split("}")[0])
    await settled_state(client, account_id)
    assert await used_once_settled(client, key, total) == total
    # A stream the client hangs up on counts what was generated, as its record says.
    body = chat("test/slowstream", stream=True, max_tokens=400)
    resp = await client.post("/api/v1/chat/completions", json=body, headers=bearer(key))
    generation_id = resp.headers["X-Generation-Id"]
    await hang_up_after(resp, b"content", 5)
    record = await generation_record(client, key, generation_id)
    assert record["cancelled"] is True
    cut = record["tokens_prompt"] + record["tokens_completion"]
    assert 0 < cut < 400
    assert await used_once_settled(client, key, total + cut) == total + cut


async def test_a_request_that_does_not_fit_is_told_the_max_tokens_that_would(
    make_client: MakeClient,
) -> None:
    client = await make_client(tokens_limit(100, "completion"))
    account_id, key = await new_account(client, purchase="10.00")
    # More than the limit allows in any window: waiting cannot help, a smaller max_tokens can.
    never = await post(client, key, chat("test/paid", max_tokens=500))
    assert never.status == 429
    error = (await never.json())["error"]
    assert error["message"] == (
        "Rate limit 'tpm' of 100 completion tokens per minute reached: this request may use up "
        "to 500 tokens, more than the limit allows in any window; with max_tokens of 100 or less "
        "it fits"
    )
    assert error["metadata"]["max_tokens_that_fits"] == 100
    assert never.headers["x-should-retry"] == "false"
    # One that fits, then one that no longer fits beside what it used.
    first = await post(client, key, chat("test/paid", max_tokens=60))
    assert first.status == 200
    completion = (await first.json())["usage"]["completion_tokens"]
    await settled_state(client, account_id)
    await used_once_settled(client, key, completion)
    left = 100 - completion
    over = await post(client, key, chat("test/paid", max_tokens=left + 1))
    assert over.status == 429
    error = (await over.json())["error"]
    assert error["message"] == (
        f"Rate limit 'tpm' of 100 completion tokens per minute reached: this request may use up "
        f"to {left + 1} tokens and {left} are left in this minute; it resets in 50 s, at "
        f"2026-11-27 12:01 UTC; with max_tokens of {left} or less it fits now"
    )
    assert error["metadata"]["tokens_remaining"] == left
    assert over.headers["Retry-After"] == "50" and over.headers["x-should-retry"] == "true"
    assert (await post(client, key, chat("test/paid", max_tokens=left))).status == 200


async def test_a_prompt_limit_counts_the_prompt_only(make_client: MakeClient) -> None:
    client = await make_client(tokens_limit(1000, "prompt"))
    account_id, key = await new_account(client, purchase="10.00")
    resp = await post(client, key, chat("test/paid", max_tokens=900))
    assert resp.status == 200  # the output's 900 are not this limit's
    prompt = (await resp.json())["usage"]["prompt_tokens"]
    await settled_state(client, account_id)
    assert await used_once_settled(client, key, prompt) == prompt
    long_prompt = chat("test/paid", "word " * 1000, max_tokens=1)
    refused = await post(client, key, long_prompt)
    assert refused.status == 429
    error = (await refused.json())["error"]
    assert "max_tokens" not in error["message"]  # a smaller max_tokens would not help
    assert "max_tokens_that_fits" not in error["metadata"]


async def test_headers_as_the_openai_client_reads_them(make_client: MakeClient) -> None:
    client = await make_client(tokens_limit(500))
    account_id, key = await new_account(client, purchase="10.00")
    oa = openai.AsyncOpenAI(
        base_url=str(client.make_url("/api/v1")), api_key=key, max_retries=0, timeout=20
    )
    async with oa:
        raw = await oa.chat.completions.with_raw_response.create(
            model="test/paid", messages=[{"role": "user", "content": "hi"}], max_tokens=100
        )
        completion = raw.parse()
        assert completion.usage is not None
        assert raw.headers["x-ratelimit-limit-tokens"] == "500"
        remaining = int(raw.headers["x-ratelimit-remaining-tokens"])
        assert remaining < 500 - 100  # the worst case was counted while it ran
        assert raw.headers["x-ratelimit-reset-tokens"] == "50s"
        pk = ":" + base64.b64encode(account_id.encode()).decode() + ":"
        assert raw.headers["RateLimit-Policy"] == f'"tpm";q=500;w=60;qu="tokens";pk={pk}'
        assert raw.headers["RateLimit"] == f'"tpm";r={remaining};t=50;pk={pk}'
        with pytest.raises(openai.RateLimitError) as caught:
            await oa.chat.completions.create(
                model="test/paid", messages=[{"role": "user", "content": "hi"}], max_tokens=1000
            )
    refusal = caught.value
    assert refusal.status_code == 429
    assert refusal.response.headers["x-ratelimit-limit-tokens"] == "500"
    assert refusal.response.headers["x-should-retry"] == "false"
    assert isinstance(refusal.body, dict) and refusal.body["metadata"]["limit"] == "tpm"


async def test_shadow_token_limits_are_counted_not_enforced(make_client: MakeClient) -> None:
    client = await make_client(tokens_limit(10, extra="shadow = true"))
    account_id, key = await new_account(client, purchase="10.00")
    for _ in range(3):
        resp = await post(client, key, chat("test/paid", max_tokens=50))
        assert resp.status == 200
        assert "x-ratelimit-limit-tokens" not in resp.headers  # shadow limits send no headers
    await settled_state(client, account_id)
    state = await window(client, key)
    assert state["shadow"] is True and state["used"] > 10 and state["remaining"] == 0
    metrics = await (await client.get("/metrics")).text()
    assert 'gateway_ratelimit_decisions_total{limit="tpm",outcome="shadow_limited"}' in metrics


async def test_tiers_overrides_and_reload(make_client: MakeClient, tmp_path: Path) -> None:
    tiers = """\
        [[limits]]
        name = "tpm"
        match = "all"
        unit = "minute"
        tiers = [{ min_purchased = "0", tokens = 50 }, { min_purchased = "10", tokens = 5000 }]
        """
    client = await make_client(tiers)
    account_id, key = await new_account(client, grant="5.00")
    refused = await post(client, key, chat("test/paid", max_tokens=100))
    assert refused.status == 429
    assert (await refused.json())["error"]["message"] == (
        "Rate limit 'tpm' of 50 tokens per minute reached; add $10 of credits to unlock 5000 "
        "tokens per minute"
    )
    # An operator's override lifts it for this account, at once.
    url = f"/admin/v1/accounts/{account_id}/limits"
    resp = await client.put(url, json={"tpm": 2_000_000_000}, headers=admin_headers())
    assert resp.status == 200, await resp.text()  # token counts go past a billion
    admitted = await post(client, key, chat("test/paid", max_tokens=100))
    assert admitted.status == 200
    assert admitted.headers["x-ratelimit-limit-tokens"] == "2000000000"
    await client.put(url, json={"tpm": None}, headers=admin_headers())
    # A purchase moves the account to the next tier.
    resp = await client.post(
        f"/admin/v1/accounts/{account_id}/purchases",
        json={"amount": "10", "method": "card", "idempotency_key": "tier"},
        headers=admin_headers(),
    )
    assert resp.status == 201
    assert (await post(client, key, chat("test/paid", max_tokens=100))).status == 200
    # A reload changes the limit for the next request.
    holder = client.server.app[LIMITS]
    assert holder.path is not None
    limit_file(holder.path, tokens_limit(60))
    assert holder.reload() is True
    assert (await post(client, key, chat("test/paid", max_tokens=100))).status == 429
    # The same name counting requests now: a window of its own, not the tokens counted so far.
    limit_file(holder.path, tokens_limit(2).replace("tokens = 2", "requests = 2"))
    limit_file(holder.path, holder.path.read_text().replace('count = "total"', ""))
    assert holder.reload() is True
    assert (await post(client, key, chat("test/paid", max_tokens=100))).status == 200


async def test_a_busy_accounts_leases_take_slices_of_the_token_window(
    make_client: MakeClient,
) -> None:
    """Above the lease rate, a gateway admits from its lease with a slice of the token window
    (no round trip a request); the window still holds exactly what was used once the slices and
    the worst cases are back, and never more than its limit."""
    # 200 requests use 15 tokens each (5 of prompt, 10 of output): more than the window holds.
    daily = tokens_limit(2500).replace('unit = "minute"', 'unit = "day"')
    client = await make_client(daily, Clock(), lease_above_requests_per_second=1, lease_seconds=0.2)
    account_id, key = await new_account(client, purchase="100.00")

    async def leased() -> float:
        for line in (await (await client.get("/metrics")).text()).splitlines():
            if line.startswith("gateway_leased_admissions_total "):
                return float(line.split()[1])
        return 0.0

    before = await leased()
    answers = []
    for burst in range(4):  # bursts: the first makes the account busy, the rest are leased
        answers += await asyncio.gather(
            *(
                post(client, key, chat("test/paid", f"b{burst} r{i}", max_tokens=10))
                for i in range(50)
            )
        )
    assert await leased() > before
    admitted = [await r.json() for r in answers if r.status == 200]
    assert admitted and len(admitted) < 200  # the limit refused some
    await settled_state(client, account_id)  # the leases are back: their slices too
    actual = sum(body["usage"]["total_tokens"] for body in admitted)
    assert await used_once_settled(client, key, actual) == actual
    assert actual <= 2500


async def test_a_busy_account_fills_its_token_window_to_the_end(make_client: MakeClient) -> None:
    """Near the end of the window a lease can take no slice worth one request: the requests go
    the usual way, and the window fills exactly: the first refusal comes when what is left (as
    settled, with no slice held ahead) is less than the request's worst case, and says so."""
    daily = tokens_limit(3000).replace('unit = "minute"', 'unit = "day"')
    client = await make_client(daily, Clock(), lease_above_requests_per_second=1, lease_seconds=0.2)
    account_id, key = await new_account(client, purchase="100.00")
    refusal: dict[str, Any] | None = None
    for i in range(400):  # one after another, hundreds a second: a busy account, leased
        resp = await post(client, key, chat("test/paid", f"r{i}", max_tokens=10))
        if resp.status == 429:
            refusal = (await resp.json())["error"]["metadata"]
            break
        assert resp.status == 200
    assert refusal is not None, "the window never filled"
    await settled_state(client, account_id)  # the leases are back: their slices too
    state = await window(client, key)
    # Refused only because what was truly left could not take its worst case.
    assert refusal["tokens_remaining"] == state["remaining"]
    assert state["remaining"] < refusal["tokens_requested"]
