"""No secret (API keys, provider keys, admin token, webhook and top-up secrets, metrics token) in
any response, log line or metric."""

import io
import logging

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from tests.support import (
    ADMIN_TOKEN,
    PROVIDER_SECRET,
    ThreadedServer,
    admin_headers,
    bearer,
    chat,
    make_settings,
    new_account,
)


async def test_a_full_scenario_leaks_no_secret(
    client: TestClient, provider: ThreadedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bodies: list[str] = []
    async with aiohttp.ClientSession() as session:
        before = await (await session.get(provider.url + "/_sim/stats")).json()
    account_id, key = await new_account(client, purchase="1.00")
    _, broke_key = await new_account(client)
    calls = [
        ("POST", "/api/v1/chat/completions", key, chat("test/paid")),
        ("POST", "/api/v1/chat/completions", key, chat("test/paid", stream=True)),
        ("POST", "/api/v1/chat/completions", key, chat("test/error-500")),
        ("POST", "/api/v1/chat/completions", key, chat("test/error-400")),
        ("POST", "/api/v1/chat/completions", key, chat("test/drop", stream=True)),
        ("POST", "/api/v1/chat/completions", broke_key, chat("test/paid")),
        ("POST", "/api/v1/chat/completions", key + "x", chat("test/paid")),
        ("GET", "/api/v1/key", key, None),
        ("GET", "/api/v1/credits", key, None),
    ]
    for method, path, secret, body in calls:
        resp = await client.request(method, path, json=body, headers=bearer(secret))
        bodies.append(await resp.text())
        bodies.append(str(dict(resp.headers)))
    resp = await client.get(f"/admin/v1/accounts/{account_id}", headers=admin_headers())
    bodies.append(await resp.text())
    bodies.append(await (await client.get("/metrics")).text())
    async with aiohttp.ClientSession() as session:
        after = await (await session.get(provider.url + "/_sim/stats")).json()
    assert after["with_key"] - before["with_key"] == after["requests"] - before["requests"] > 0

    everything = "\n".join(bodies) + "\n" + caplog.text
    for secret in (key, broke_key, PROVIDER_SECRET, ADMIN_TOKEN):
        assert secret not in everything
    assert "Traceback" not in "\n".join(bodies)


async def test_metrics_can_require_a_token(redis_url: str, provider: ThreadedServer) -> None:
    app = create_app(make_settings(redis_url, provider.url, metrics_token="scrape-me"))
    async with TestClient(TestServer(app)) as c:
        assert (await c.get("/metrics")).status == 401
        ok = await c.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert ok.status == 200 and "gateway_build_info" in await ok.text()


async def test_one_json_access_line_per_request(client: TestClient) -> None:
    import json as _json

    from gateway.observability.logs import ACCESS_LOG

    captured = io.BytesIO()
    ACCESS_LOG.flush()
    ACCESS_LOG.stream, ACCESS_LOG.json = captured, True
    access_logger = logging.getLogger("gateway.access")
    level = access_logger.level
    access_logger.setLevel(logging.INFO)
    try:
        _, key = await new_account(client, purchase="1.00")
        resp = await client.post(
            "/api/v1/chat/completions",
            json=chat("test/paid"),
            headers={**bearer(key), "X-Request-Id": "req-42"},
        )
        assert resp.headers["X-Request-Id"] == "req-42"
        ACCESS_LOG.flush()
    finally:
        ACCESS_LOG.stream = None
        access_logger.setLevel(level)
    lines = [_json.loads(raw) for raw in captured.getvalue().splitlines()]
    mine = [line for line in lines if line.get("request_id") == "req-42"]
    assert len(mine) == 1
    line = mine[0]
    assert line["status"] == 200 and line["model"] == "test/paid" and line["provider"] == "sim"
    assert line["generation_id"] == resp.headers["X-Generation-Id"]
    assert line["cost_usd"] == "0.0000105" and line["prompt_tokens"] == 6
    assert len(line["key"]) == 12 and key not in captured.getvalue().decode()
    assert all("request_id" in entry and "status" in entry for entry in lines)
