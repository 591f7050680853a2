"""Admission, forwarding and settlement through HTTP: exact charges, refusals, provider failures."""

import hashlib
from decimal import Decimal

from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from tests.support import (
    COMPLETION_PRICE,
    IMAGE_PRICE,
    PROMPT_PRICE,
    PROVIDER_SECRET,
    ThreadedServer,
    account_state,
    bearer,
    chat,
    make_settings,
    new_account,
)


def listed_cost(usage: dict[str, int]) -> Decimal:
    return usage["prompt_tokens"] * PROMPT_PRICE + usage["completion_tokens"] * COMPLETION_PRICE


async def test_completion_is_charged_exactly_the_listed_price(client: TestClient) -> None:
    account_id, key = await new_account(client, purchase="10.00")
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key)
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    generation_id = resp.headers["X-Generation-Id"]
    assert body["id"] == generation_id
    assert body["model"] == "test/paid"
    usage = body["usage"]
    assert usage["prompt_tokens"] == 6 and usage["completion_tokens"] == 16
    cost = listed_cost(usage)  # 6 x 0.00000015 + 16 x 0.0000006 = 0.0000105
    assert cost == Decimal("0.0000105")
    assert Decimal(str(usage["cost"])) == cost
    state = await account_state(client, account_id)
    assert Decimal(state["balance"]) == Decimal("10.00") - cost
    assert state["reserved"] == "0.00"

    credits = await (await client.get("/api/v1/credits", headers=bearer(key))).json()
    assert credits["data"]["total_credits"] == 10.0
    assert Decimal(str(credits["data"]["total_usage"])) == cost

    record = await client.get(f"/api/v1/generation?id={generation_id}", headers=bearer(key))
    data = (await record.json())["data"]
    assert data["model"] == "test/paid" and data["provider_name"] == "sim"
    assert data["tokens_prompt"] == 6 and data["tokens_completion"] == 16
    assert Decimal(data["total_cost_usd"]) == cost
    assert data["streamed"] is False and data["cancelled"] is False
    assert data["finish_reason"] == "stop"
    assert data["api_key_hash"] == hashlib.sha256(key.encode()).hexdigest()


async def test_legacy_completions_endpoint_and_v1_alias(client: TestClient) -> None:
    _, key = await new_account(client, purchase="1.00")
    resp = await client.post(
        "/v1/completions", json={"model": "test/paid", "prompt": "Say hi"}, headers=bearer(key)
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["choices"][0]["text"].startswith("This is a simulated reply")
    assert body["usage"]["cost"] > 0


async def test_generation_of_another_account_is_not_found(client: TestClient) -> None:
    _, key_a = await new_account(client, purchase="1.00")
    _, key_b = await new_account(client, purchase="1.00")
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key_a)
    )
    generation_id = resp.headers["X-Generation-Id"]
    other = await client.get(f"/api/v1/generation?id={generation_id}", headers=bearer(key_b))
    assert other.status == 404
    assert (await other.json())["error"]["metadata"]["error_type"] == "not_found"
    missing = await client.get("/api/v1/generation?id=gen-zzz-123", headers=bearer(key_a))
    assert missing.status == 404


async def test_free_model_works_at_zero_balance_and_costs_nothing(client: TestClient) -> None:
    account_id, key = await new_account(client)
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/free:free"), headers=bearer(key)
    )
    assert resp.status == 200
    assert (await resp.json())["usage"]["cost"] == 0
    assert (await account_state(client, account_id))["balance"] == "0.00"


async def test_paid_model_at_zero_balance_is_402_with_what_it_could_afford(
    client: TestClient,
) -> None:
    _, key = await new_account(client)
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key)
    )
    assert resp.status == 402
    error = (await resp.json())["error"]
    assert error["metadata"]["error_type"] == "payment_required"
    assert "fewer max_tokens" in error["message"]


async def test_worst_case_above_balance_is_402_and_smaller_max_tokens_passes(
    client: TestClient,
) -> None:
    account_id, key = await new_account(client, grant="0.0001")
    # 1000 max tokens at $0.0000006 = $0.0006 > $0.0001 available
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/paid", max_tokens=1000), headers=bearer(key)
    )
    assert resp.status == 402
    meta = (await resp.json())["error"]["metadata"]
    assert meta["reason"] == "insufficient_credits"
    affordable = meta["affordable_max_tokens"]
    assert 100 < affordable < 200
    resp = await client.post(
        "/api/v1/chat/completions",
        json=chat("test/paid", max_tokens=affordable),
        headers=bearer(key),
    )
    assert resp.status == 200
    assert (await account_state(client, account_id))["reserved"] == "0.00"


async def test_negative_balance_refuses_free_models_too(client: TestClient) -> None:
    account_id, key = await new_account(client, grant="0.001")
    # The provider bills 10,006 prompt tokens for a 6-token prompt: $0.0015009 + 1 token > $0.001.
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/overuse", max_tokens=1), headers=bearer(key)
    )
    assert resp.status == 200
    state = await account_state(client, account_id)
    assert Decimal(state["balance"]) == Decimal("0.001") - Decimal("0.0015015")
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/free:free"), headers=bearer(key)
    )
    assert resp.status == 402
    assert (await resp.json())["error"]["metadata"]["reason"] == "negative_balance"


async def test_bad_requests_are_clear_400s(client: TestClient) -> None:
    _, key = await new_account(client, purchase="1.00")
    url = "/api/v1/chat/completions"
    cases: list[tuple[bytes, str | None]] = [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "test/paid", "messages": "hi"}', "messages"),
        (
            b'{"model": "test/paid", "messages": [{"role": "user", "content": "x"}], '
            b'"max_tokens": -5}',
            "max_tokens",
        ),
        (
            b'{"model": "test/paid", "messages": [{"role": "user", "content": "x"}], '
            b'"max_tokens": "100"}',
            "max_tokens",
        ),
        (
            b'{"model": "test/paid", "messages": [{"role": "user", "content": "x"}], '
            b'"stream": "yes"}',
            "stream",
        ),
        (
            b'{"model": "test/paid", "messages": [{"role": "user", "content": "x"}], '
            b'"temperature": "hot"}',
            "temperature",
        ),
        (
            b'{"model": "test/paid", "messages": [{"role": "user", "content": "x"}], '
            b'"max_tokens": 1e400}',
            None,
        ),
    ]
    for raw, field in cases:
        resp = await client.post(url, data=raw, headers=bearer(key))
        assert resp.status == 400, raw
        error = (await resp.json())["error"]
        assert error["code"] == 400 and error["metadata"]["error_type"] == "bad_request"
        assert "Traceback" not in error["message"]
        if field:
            assert error["metadata"]["field"] == field, raw


async def test_unknown_model_is_404(client: TestClient) -> None:
    _, key = await new_account(client, purchase="1.00")
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("nobody/nothing"), headers=bearer(key)
    )
    assert resp.status == 404
    assert (await resp.json())["error"]["metadata"]["error_type"] == "model_not_found"


async def test_missing_and_invalid_keys_are_401(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer sk-gw-v1-nope"}, {"Authorization": "Basic x"}):
        resp = await client.post(
            "/api/v1/chat/completions", json=chat("test/paid"), headers=headers
        )
        assert resp.status == 401
        assert (await resp.json())["error"]["metadata"]["error_type"] == "invalid_api_key"


async def test_body_over_the_cap_is_413_before_it_is_read(
    redis_url: str, provider: ThreadedServer
) -> None:
    app = create_app(make_settings(redis_url, provider.url, max_body_bytes=1024))
    async with TestClient(TestServer(app)) as c:
        _, key = await new_account(c, purchase="1.00")
        resp = await c.post(
            "/api/v1/chat/completions",
            json=chat("test/paid", content="x" * 5000),
            headers=bearer(key),
        )
        assert resp.status == 413
        assert (await resp.json())["error"]["metadata"]["error_type"] == "payload_too_large"


async def test_provider_failures_are_not_charged(client: TestClient) -> None:
    account_id, key = await new_account(client, purchase="1.00")
    expected = {
        "test/error-500": 502,
        "test/garbage": 502,
        "test/drop": 502,
        "test/unreachable": 502,
        "test/error-400": 400,
    }
    for model, status in expected.items():
        resp = await client.post("/api/v1/chat/completions", json=chat(model), headers=bearer(key))
        assert resp.status == status, (model, await resp.text())
        body = await resp.json()
        assert body["error"]["code"] == status
        assert PROVIDER_SECRET not in await resp.text()
        generation_id = resp.headers.get("X-Generation-Id")
        assert generation_id is None or generation_id.startswith("gen-")
    state = await account_state(client, account_id)
    assert state["balance"] == "1.00" and state["reserved"] == "0.00"


async def test_provider_timeout_is_408_and_not_charged(
    redis_url: str, provider: ThreadedServer
) -> None:
    app = create_app(make_settings(redis_url, provider.url, upstream_read_timeout=0.5))
    async with TestClient(TestServer(app)) as c:
        account_id, key = await new_account(c, purchase="1.00")
        resp = await c.post("/api/v1/chat/completions", json=chat("test/slow"), headers=bearer(key))
        assert resp.status == 408
        assert (await resp.json())["error"]["metadata"]["error_type"] == "timeout"
        state = await account_state(c, account_id)
        assert state["balance"] == "1.00" and state["reserved"] == "0.00"


async def test_fallback_provider_serves_when_the_first_is_down(client: TestClient) -> None:
    _, key = await new_account(client, purchase="1.00")
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/fallback"), headers=bearer(key)
    )
    assert resp.status == 200
    assert (await resp.json())["provider"] == "sim"


async def test_missing_usage_is_estimated_and_charged(client: TestClient) -> None:
    account_id, key = await new_account(client, purchase="1.00")
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/nousage"), headers=bearer(key)
    )
    assert resp.status == 200
    cost = Decimal(str((await resp.json())["usage"]["cost"]))
    assert cost > 0
    state = await account_state(client, account_id)
    assert Decimal(state["balance"]) == Decimal("1.00") - cost


async def test_models_list_prices_as_decimal_strings(client: TestClient) -> None:
    resp = await client.get("/api/v1/models")
    models = {m["id"]: m for m in (await resp.json())["data"]}
    assert models["test/paid"]["pricing"]["prompt"] == "0.00000015"
    assert models["test/paid"]["pricing"]["completion"] == "0.0000006"
    assert models["test/free:free"]["pricing"]["prompt"] == "0"


async def test_key_endpoint_reports_usage_and_tier(client: TestClient) -> None:
    _, key = await new_account(client)
    data = (await (await client.get("/api/v1/key", headers=bearer(key))).json())["data"]
    for field in (
        "label",
        "usage",
        "usage_daily",
        "usage_weekly",
        "usage_monthly",
        "limit",
        "limit_reset",
        "limit_remaining",
        "is_free_tier",
        "free_model_daily_requests",
    ):
        assert field in data
    assert data["is_free_tier"] is True and data["usage"] == 0


async def test_health_and_ready(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200
    unknown = await client.get("/nope")
    assert unknown.status == 404
    assert (await unknown.json())["error"]["metadata"]["error_type"] == "not_found"


async def _sim_stats(provider: ThreadedServer) -> dict[str, int]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        stats: dict[str, int] = await (await session.get(provider.url + "/_sim/stats")).json()
        return stats


async def test_provider_is_never_asked_for_more_than_was_reserved(
    client: TestClient, provider: ThreadedServer
) -> None:
    _, key = await new_account(client, purchase="1.00")
    for extra, sent in (
        ({"max_tokens": 50_000}, 1000),
        ({}, 1000),
        ({"max_tokens": 7}, 7),
        ({"max_completion_tokens": 9}, 9),
    ):
        resp = await client.post(
            "/api/v1/chat/completions", json=chat("test/paid", **extra), headers=bearer(key)
        )
        assert resp.status == 200
        assert (await _sim_stats(provider))["last_max_tokens"] == sent, extra


async def test_every_prompt_and_choice_is_reserved(client: TestClient) -> None:
    # Worst case of one prompt and one choice is about 1000 x $0.0000006 = $0.0006.
    _, key = await new_account(client, grant="0.0015")
    one = {"model": "test/paid", "prompt": "hi"}
    assert (await client.post("/api/v1/completions", json=one, headers=bearer(key))).status == 200
    for body in (
        {"model": "test/paid", "prompt": ["a", "b", "c"]},
        {"model": "test/paid", "prompt": "hi", "best_of": 3},
        {"model": "test/paid", "prompt": "hi", "n": 3},
    ):
        resp = await client.post("/api/v1/completions", json=body, headers=bearer(key))
        assert resp.status == 402, body
    bad = await client.post(
        "/api/v1/completions",
        json={"model": "test/paid", "prompt": "x", "best_of": 0},
        headers=bearer(key),
    )
    assert bad.status == 400 and (await bad.json())["error"]["metadata"]["field"] == "best_of"


async def test_affordable_max_tokens_accounts_for_n(client: TestClient) -> None:
    _, key = await new_account(client, grant="0.001")
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/paid", n=4), headers=bearer(key)
    )
    assert resp.status == 402
    affordable = (await resp.json())["error"]["metadata"]["affordable_max_tokens"]
    retry = await client.post(
        "/api/v1/chat/completions",
        json=chat("test/paid", n=4, max_tokens=affordable),
        headers=bearer(key),
    )
    assert retry.status == 200
    over = await client.post(
        "/api/v1/chat/completions",
        json=chat("test/paid", n=4, max_tokens=affordable + 1),
        headers=bearer(key),
    )
    assert over.status == 402


async def test_provider_trouble_that_is_the_operators_is_not_passed_on(client: TestClient) -> None:
    _, key = await new_account(client, purchase="1.00")
    payment = await client.post(
        "/api/v1/chat/completions", json=chat("test/error-402"), headers=bearer(key)
    )
    assert payment.status == 502
    busy = await client.post(
        "/api/v1/chat/completions", json=chat("test/error-429"), headers=bearer(key)
    )
    assert busy.status == 503 and busy.headers["Retry-After"] == "2"  # the provider's own


async def test_counted_request_that_failed_upstream_keeps_its_limit_headers(
    client: TestClient,
) -> None:
    _, key = await new_account(client)
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/broken:free"), headers=bearer(key)
    )
    assert resp.status == 502
    assert resp.headers["X-RateLimit-Limit"] in ("20", "50")
    assert resp.headers["X-Generation-Id"].startswith("gen-")


async def test_admin_token_with_undecodable_bytes_is_a_401_not_a_crash(
    client: TestClient,
) -> None:
    import asyncio

    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"GET /admin/v1/accounts/x HTTP/1.1\r\nHost: t\r\n"
        b"Authorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    head = await reader.readline()
    writer.close()
    assert head.startswith(b"HTTP/1.1 401")


async def test_ready_reloads_scripts_a_restarted_redis_forgot(client: TestClient) -> None:
    from gateway.state import SERVICES
    from metering.scripts import Scripts

    await client.app[SERVICES].redis.script_flush()
    ready = await (await client.get("/readyz")).json()
    assert ready["scripts_loaded_now"] == len(Scripts(client.app[SERVICES].redis).all) == 12
    assert (await (await client.get("/readyz")).json())["scripts_loaded_now"] == 0
    _, key = await new_account(client, purchase="1.00")
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key)
    )
    assert resp.status == 200


def _with_images(count: int, stream: bool = False) -> dict[str, object]:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 4000}}
    content = [{"type": "text", "text": "What is in these pictures?"}, *[image] * count]
    return {
        "model": "test/vision",
        "messages": [{"role": "user", "content": content}],
        "stream": stream,
    }


async def test_input_images_are_charged_the_listed_image_price(client: TestClient) -> None:
    """Providers report no image count: the gateway counts the image parts it forwards, charges
    each the model's listed image price, and reserves for them before forwarding."""
    account_id, key = await new_account(client, purchase="1.00")
    resp = await client.post("/api/v1/chat/completions", json=_with_images(2), headers=bearer(key))
    assert resp.status == 200, await resp.text()
    usage = (await resp.json())["usage"]
    cost = listed_cost(usage) + 2 * IMAGE_PRICE
    assert Decimal(str(usage["cost"])) == cost
    record = await client.get(
        f"/api/v1/generation?id={resp.headers['X-Generation-Id']}", headers=bearer(key)
    )
    data = (await record.json())["data"]
    assert data["num_media_prompt"] == 2 and Decimal(data["total_cost_usd"]) == cost

    streamed = await client.post(
        "/api/v1/chat/completions", json=_with_images(1, stream=True), headers=bearer(key)
    )
    text = await streamed.text()
    assert streamed.status == 200 and "data: [DONE]" in text
    state = await account_state(client, account_id)
    spent = Decimal("1.00") - Decimal(state["balance"])
    assert spent > cost + IMAGE_PRICE  # the stream's one image, besides its tokens
    assert state["reserved"] == "0.00"


async def test_images_the_balance_cannot_cover_are_refused_before_forwarding(
    client: TestClient,
) -> None:
    """$0.005 covers the text of the request and five images, not ten: the worst case counts
    every image at its price, so the request is refused rather than charged into the red."""
    low_id, low_key = await new_account(client, grant="0.005")
    refused = await client.post(
        "/api/v1/chat/completions", json=_with_images(10), headers=bearer(low_key)
    )
    assert refused.status == 402, await refused.text()
    error = (await refused.json())["error"]
    assert Decimal(error["metadata"]["required"]) > Decimal("0.010")
    assert error["metadata"]["affordable_max_tokens"] == 0
    state = await account_state(client, low_id)
    assert Decimal(state["balance"]) == Decimal("0.005") and state["reserved"] == "0.00"


async def test_legacy_completions_are_not_charged_for_images_in_a_stray_messages_field(
    client: TestClient,
) -> None:
    _, key = await new_account(client, purchase="1.00")
    body = {**_with_images(3), "prompt": "Say hi"}
    resp = await client.post("/api/v1/completions", json=body, headers=bearer(key))
    assert resp.status == 200, await resp.text()
    usage = (await resp.json())["usage"]
    assert Decimal(str(usage["cost"])) == listed_cost(usage)  # tokens only
