"""No secret (API key, provider key, admin token) in any response or log line."""

import logging

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.support import (
    ADMIN_TOKEN,
    PROVIDER_SECRET,
    ThreadedServer,
    admin_headers,
    bearer,
    chat,
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
