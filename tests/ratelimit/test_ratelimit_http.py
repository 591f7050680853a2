"""Rate limits through HTTP against a real Redis, with the clock moved instead of slept."""

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.clock import ManualClock
from gateway.limits import LIMITS
from tests.support import ThreadedServer, admin_headers, bearer, chat, make_settings, new_account

MIDNIGHT = 1_795_737_600.0  # 2026-11-27 00:00:00 UTC
NOON = MIDNIGHT + 43_200
MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def make_client(redis_url: str, provider: ThreadedServer) -> AsyncIterator[MakeClient]:
    clients: list[TestClient] = []

    async def make(clock: ManualClock, **overrides: Any) -> TestClient:
        url = overrides.pop("redis_url", redis_url)
        app = create_app(make_settings(url, provider.url, **overrides), clock=clock)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def free(client: TestClient, key: str) -> ClientResponse:
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/free:free"), headers=bearer(key)
    )
    await resp.read()
    return resp


async def daily(client: TestClient, key: str) -> dict[str, Any]:
    data = (await (await client.get("/api/v1/key", headers=bearer(key))).json())["data"]
    result: dict[str, Any] = data["free_model_daily_requests"]
    return result


async def use_free_requests(client: TestClient, clock: ManualClock, key: str, n: int) -> None:
    """n admitted free requests, moving to a new minute every 20 (the per-minute limit)."""
    for i in range(n):
        if i and i % 20 == 0:
            clock.advance(60)
        assert (await free(client, key)).status == 200, i


async def test_fifty_a_day_then_a_429_that_explains_itself(make_client: MakeClient) -> None:
    clock = ManualClock(NOON)
    client = await make_client(clock)
    _, key = await new_account(client)
    await use_free_requests(client, clock, key, 50)
    assert await daily(client, key) == {"limit": 50, "remaining": 0, "used": 50}
    clock.advance(60)
    refused = await free(client, key)
    assert refused.status == 429
    error = (await refused.json())["error"]
    assert error["code"] == 429
    assert error["metadata"]["error_type"] == "rate_limit_exceeded"
    assert error["metadata"]["limit"] == "free-per-day"
    assert error["message"] == (
        "Free model daily limit of 50 reached; add $10 of credits to unlock 1000 requests per day"
    )
    reset_ms = int((MIDNIGHT + 86_400) * 1000)
    assert refused.headers["X-RateLimit-Limit"] == "50"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert refused.headers["X-RateLimit-Reset"] == str(reset_ms)
    assert int(refused.headers["Retry-After"]) == int(MIDNIGHT + 86_400 - clock.now())
    assert '"free-per-day";q=50;w=86400' in refused.headers["RateLimit-Policy"]
    assert refused.headers["RateLimit"].startswith('"free-per-day";r=0;t=')
    # A refused request takes nothing: still 50 used, and the next day starts from zero.
    assert (await daily(client, key))["used"] == 50
    clock.set(MIDNIGHT + 86_400)
    assert (await free(client, key)).status == 200
    assert await daily(client, key) == {"limit": 50, "remaining": 49, "used": 1}


async def test_twenty_a_minute_across_all_keys_of_an_account(make_client: MakeClient) -> None:
    clock = ManualClock(NOON + 30)
    client = await make_client(clock)
    account_id, key_a = await new_account(client)
    resp = await client.post(
        f"/admin/v1/accounts/{account_id}/keys", json={"name": "b"}, headers=admin_headers()
    )
    key_b = (await resp.json())["key"]
    for i in range(20):
        resp = await free(client, key_a if i % 2 else key_b)
        assert resp.status == 200
    assert resp.headers["X-RateLimit-Remaining"] == "0"
    for key in (key_a, key_b):
        refused = await free(client, key)
        assert refused.status == 429
        body = await refused.json()
        assert body["error"]["metadata"]["limit"] == "free-per-minute"
        assert "resets in 30 s" in body["error"]["message"]
        assert refused.headers["Retry-After"] == "30"
    clock.set(NOON + 60)  # the next minute starts at :00
    assert (await free(client, key_a)).status == 200


async def test_a_purchase_lifts_the_tier_at_once(make_client: MakeClient) -> None:
    clock = ManualClock(NOON)
    client = await make_client(clock)
    account_id, key = await new_account(client)
    await use_free_requests(client, clock, key, 50)
    clock.advance(60)
    assert (await free(client, key)).status == 429
    resp = await client.post(
        f"/admin/v1/accounts/{account_id}/purchases",
        json={"amount": "10.00", "method": "card", "idempotency_key": "p"},
        headers=admin_headers(),
    )
    assert resp.status == 201
    assert await daily(client, key) == {"limit": 1000, "remaining": 950, "used": 50}
    assert (await free(client, key)).status == 200
    data = (await (await client.get("/api/v1/key", headers=bearer(key))).json())["data"]
    assert data["is_free_tier"] is False


async def test_paid_models_do_not_count_against_free_limits(make_client: MakeClient) -> None:
    clock = ManualClock(NOON)
    client = await make_client(clock)
    _, key = await new_account(client, purchase="5.00")
    for _ in range(25):
        resp = await client.post(
            "/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key)
        )
        assert resp.status == 200
        assert "X-RateLimit-Limit" not in resp.headers
    assert (await daily(client, key))["used"] == 0


async def test_operator_overrides_an_account(make_client: MakeClient) -> None:
    clock = ManualClock(NOON)
    client = await make_client(clock)
    account_id, key = await new_account(client)
    url = f"/admin/v1/accounts/{account_id}/limits"
    resp = await client.put(url, json={"free-per-day": 2}, headers=admin_headers())
    assert resp.status == 200
    assert (await resp.json())["overrides"] == {"free-per-day": 2}
    assert [(await free(client, key)).status for _ in range(3)] == [200, 200, 429]
    resp = await client.put(
        url, json={"free-per-day": "unlimited", "free-per-minute": None}, headers=admin_headers()
    )
    assert (await resp.json())["overrides"] == {"free-per-day": "unlimited"}
    assert (await free(client, key)).status == 200
    assert await daily(client, key) == {"limit": None, "remaining": None, "used": 3}
    bad = await client.put(url, json={"nope": 1}, headers=admin_headers())
    assert bad.status == 400 and (await bad.json())["error"]["metadata"]["field"] == "nope"
    bad = await client.put(url, json={"free-per-day": -3}, headers=admin_headers())
    assert bad.status == 400
    missing = await client.put("/admin/v1/accounts/nobody/limits", json={}, headers=admin_headers())
    assert missing.status == 404


def _write(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


PER_KEY = """
[[limits]]
name = "per-key-all-models"
description = "Key limit of {limit} requests per minute"
scope = "key"
match = "all"
unit = "minute"
requests = 3

[[limits]]
name = "watch-paid"
match = { model = "test/*" }
unit = "minute"
requests = 1
shadow = true
"""


async def _shadow_limited(client: TestClient) -> float:
    """gateway_ratelimit_decisions_total for watch-paid's shadow decisions, as scraped."""
    text = await (await client.get("/metrics")).text()
    wanted = 'gateway_ratelimit_decisions_total{limit="watch-paid",outcome="shadow_limited"} '
    lines = [line for line in text.splitlines() if line.startswith(wanted)]
    return float(lines[0].split()[-1]) if lines else 0.0


async def test_operator_limits_per_key_and_shadow(make_client: MakeClient, tmp_path: Path) -> None:
    limits = _write(tmp_path / "limits.toml", PER_KEY)
    clock = ManualClock(NOON)
    client = await make_client(clock, limits_file=limits)
    account_id, key_a = await new_account(client, purchase="5.00")
    resp = await client.post(
        f"/admin/v1/accounts/{account_id}/keys", json={"name": "b"}, headers=admin_headers()
    )
    key_b = (await resp.json())["key"]
    before = await _shadow_limited(client)
    statuses = []
    for _ in range(4):
        resp = await client.post(
            "/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key_a)
        )
        statuses.append(resp.status)
    assert statuses == [200, 200, 200, 429]
    body = await resp.json()
    assert body["error"]["message"].startswith("Key limit of 3 requests per minute reached")
    assert await _shadow_limited(client) - before == 2  # requests 2 and 3 passed its limit of 1
    other = await client.post(
        "/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key_b)
    )
    assert other.status == 200  # the limit is per key


async def test_reload_takes_a_good_file_and_refuses_a_bad_one(
    make_client: MakeClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    limits = _write(tmp_path / "limits.toml", PER_KEY)
    clock = ManualClock(NOON)
    client = await make_client(clock, limits_file=limits, limits_reload_seconds=0.05)
    holder = client.app[LIMITS]
    assert [c.name for c in holder.policy.limits] == ["per-key-all-models", "watch-paid"]
    _write(limits, PER_KEY.replace("requests = 3", "requests = 600"))
    for _ in range(100):  # the watcher notices the change on disk
        if holder.policy.limits[0].tiers == ((0, 600),):
            break
        await asyncio.sleep(0.05)
    assert holder.policy.limits[0].tiers == ((0, 600),)
    caplog.set_level(logging.ERROR, logger="gateway.limits")
    _write(limits, PER_KEY.replace('unit = "minute"', 'unit = "fortnight"', 1))
    assert holder.reload() is False
    assert holder.policy.limits[0].tiers == ((0, 600),)  # the previous limits stay
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and "limits.toml:7" in refused[0].getMessage()


async def test_redis_down_is_a_quick_503(make_client: MakeClient) -> None:
    from gateway.runtime.redis_server import free_port

    clock = ManualClock(NOON)
    down = f"redis://127.0.0.1:{free_port()}/0"
    client = await make_client(clock, redis_url=down, redis_timeout_seconds=0.25)
    key = "sk-gw-v1-" + "0" * 64
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/free:free"), headers=bearer(key)
    )
    assert resp.status == 503
    assert (await resp.json())["error"]["metadata"]["error_type"] == "service_unavailable"
    assert loop.time() - started < 5
    assert (await client.get("/readyz")).status == 503
    assert hashlib.sha256(key.encode()).hexdigest()  # the key never reached a store


@pytest.mark.parametrize("admit_free", [True, False])
async def test_redis_lost_after_start_free_models_by_setting(
    make_client: MakeClient, tmp_path: Path, admit_free: bool
) -> None:
    from gateway.runtime.redis_server import RedisServer, free_port

    server = RedisServer(tmp_path, port=free_port(), appendonly=False).start()
    try:
        clock = ManualClock(NOON)
        client = await make_client(
            clock,
            redis_url=server.url,
            redis_timeout_seconds=0.25,
            key_cache_seconds=600,
            admit_free_models_without_redis=admit_free,
        )
        _, key = await new_account(client, purchase="1.00")
        assert (await free(client, key)).status == 200  # the key is now known to this process
    finally:
        server.stop()
    resp = await free(client, key)
    assert resp.status == (200 if admit_free else 503)
    paid = await client.post(
        "/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key)
    )
    assert paid.status == 503


GUESSING = """
[[limits]]
name = "invalid-keys"
scope = "client"
match = "invalid_key"
unit = "minute"
requests = 3
"""


async def test_key_guessing_is_slowed_down(make_client: MakeClient, tmp_path: Path) -> None:
    limits = _write(tmp_path / "limits.toml", GUESSING)
    client = await make_client(ManualClock(NOON + 20), limits_file=limits)
    statuses = []
    for i in range(5):
        resp = await client.post(
            "/api/v1/chat/completions",
            json=chat("test/paid"),
            headers=bearer(f"sk-gw-v1-guess-{i}"),
        )
        statuses.append(resp.status)
    assert statuses == [401, 401, 401, 429, 429]
    body = await resp.json()
    assert body["error"]["metadata"]["limit"] == "invalid-keys"
    assert resp.headers["Retry-After"] == "40"


def test_client_scope_goes_with_invalid_key_only() -> None:
    from config.errors import ConfigError
    from config.limits import parse_limits

    with pytest.raises(ConfigError, match="client"):
        parse_limits(GUESSING.replace('match = "invalid_key"', 'match = "all"'), "f")
    with pytest.raises(ConfigError, match="client"):
        parse_limits(GUESSING.replace('scope = "client"', 'scope = "key"'), "f")
