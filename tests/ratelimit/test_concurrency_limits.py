"""Limits on requests in flight, against a real Redis and the simulated provider: never more at
the provider than the limit allows, the rest refused at once, and a place given back on every way
a request ends: the answer, a hang-up, a provider's error, and a gateway killed mid-stream
(within the reservation timeout)."""

import asyncio
import signal
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.runtime.redis_server import free_port
from tests.processes import answers, gateway_process, stop, wait_until
from tests.support import (
    ADMIN_TOKEN,
    ThreadedServer,
    admin_headers,
    bearer,
    chat,
    make_settings,
    new_account,
)

IN_FLIGHT = """\
    [[limits]]
    name = "streams"
    description = "At most {limit} requests at once"
    scope = "key"
    match = "all"
    concurrent = 3
    """


@pytest.fixture
async def client(
    redis_url: str, provider: ThreadedServer, tmp_path: Path
) -> AsyncIterator[TestClient]:
    limits = tmp_path / "limits.toml"
    limits.write_text(textwrap.dedent(IN_FLIGHT))
    settings = make_settings(redis_url, provider.url, limits_file=str(limits))
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as c:
        yield c


async def provider_stats(provider: ThreadedServer) -> dict[str, int]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(provider.url + "/_sim/stats") as resp,
    ):
        stats: dict[str, int] = await resp.json()
        return stats


async def in_flight(client: TestClient, key: str) -> int:
    data = (await (await client.get("/api/v1/key", headers=bearer(key))).json())["data"]
    state = next(s for s in data["rate_limits"] if s["name"] == "streams")
    assert (state["kind"], state["window"], state["resets_at"]) == ("concurrent", None, None)
    return int(state["used"])


async def until_in_flight(client: TestClient, key: str, count: int) -> None:
    for _ in range(100):
        if await in_flight(client, key) == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{await in_flight(client, key)} in flight, not {count}")


async def open_stream(client: TestClient, key: str, model: str = "test/hold") -> ClientResponse:
    body = chat(model, stream=True, max_tokens=30)
    return await client.post("/api/v1/chat/completions", json=body, headers=bearer(key))


async def test_three_in_flight_of_twenty_and_the_rest_refused_at_once(
    client: TestClient, provider: ThreadedServer
) -> None:
    _, key = await new_account(client, purchase="10.00")
    before = await provider_stats(provider)
    responses = await asyncio.gather(*(open_stream(client, key) for _ in range(20)))
    try:
        statuses = sorted(r.status for r in responses)
        assert statuses == [200] * 3 + [429] * 17
        # The 429s came while the three streams (a word a second) were still open.
        open_ones = [r for r in responses if r.status == 200]
        assert all(not r.content.at_eof() for r in open_ones)
        refused = next(r for r in responses if r.status == 429)
        error = (await refused.json())["error"]
        assert error["metadata"]["limit"] == "streams"
        assert error["message"] == (
            "At most 3 requests at once reached: 3 requests of this limit are in flight; retry "
            "when one of them ends"
        )
        assert refused.headers["Retry-After"] == "1"
        assert refused.headers["x-should-retry"] == "true"
        assert '"streams";q=3;qu="concurrent-requests";pk=:' in refused.headers["RateLimit-Policy"]
        assert refused.headers["RateLimit"].startswith('"streams";r=0;pk=:')
        after = await provider_stats(provider)
        assert after["streams_started"] - before["streams_started"] == 3
        assert await in_flight(client, key) == 3
        # A hang-up gives its place back: another stream gets in.
        open_ones[0].close()
        await until_in_flight(client, key, 2)
        again = await open_stream(client, key)
        assert again.status == 200
        again.close()
    finally:
        for resp in responses:
            resp.close()
    await until_in_flight(client, key, 0)


async def test_answers_and_provider_errors_give_their_place_back(client: TestClient) -> None:
    _, key = await new_account(client, purchase="10.00")
    for _ in range(5):  # more than the limit, one after another: each ends before the next
        resp = await client.post(
            "/api/v1/chat/completions", json=chat("test/error-500"), headers=bearer(key)
        )
        assert resp.status == 502, await resp.text()
        resp = await client.post(
            "/api/v1/chat/completions", json=chat("test/paid", max_tokens=5), headers=bearer(key)
        )
        assert resp.status == 200
    await until_in_flight(client, key, 0)


async def test_other_keys_have_their_own_places(client: TestClient) -> None:
    account_id, key = await new_account(client, purchase="10.00")
    resp = await client.post(
        f"/admin/v1/accounts/{account_id}/keys", json={"name": "b"}, headers=admin_headers()
    )
    other = (await resp.json())["key"]
    streams = [await open_stream(client, key) for _ in range(3)]
    try:
        assert [s.status for s in streams] == [200] * 3
        assert (await open_stream(client, key)).status == 429
        theirs = await open_stream(client, other)  # scope "key": a place of its own
        assert theirs.status == 200
        theirs.close()
    finally:
        for s in streams:
            s.close()


CONFIG = """\
    [[providers]]
    name = "sim"
    base_url = "{url}/v1"

    [[models]]
    id = "test/hold:free"
    provider = "sim"
    upstream_model = "sim-hold"
    """

ONE_AT_A_TIME = """\
    [[limits]]
    name = "one"
    match = "all"
    concurrent = 1
    """


def _free_stream_body() -> bytes:
    import json

    body = chat("test/hold:free", stream=True, max_tokens=60)
    return json.dumps(body).encode()


async def test_a_killed_gateways_place_is_given_back_within_the_timeout(
    tmp_path: Path, redis_url: str, provider: ThreadedServer
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(textwrap.dedent(CONFIG).format(url=provider.url))
    limits = tmp_path / "limits.toml"
    limits.write_text(textwrap.dedent(ONE_AT_A_TIME))
    timeout = 2.0
    env = {
        "GATEWAY_REDIS_URL": redis_url,
        "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "GATEWAY_LIMITS_FILE": str(limits),
        "GATEWAY_RESERVATION_TIMEOUT_SECONDS": str(timeout),
    }
    ports = [free_port(), free_port()]
    procs = [
        gateway_process(["serve", "--config", str(config), "--port", str(p)], env) for p in ports
    ]
    first, second = (f"http://127.0.0.1:{p}" for p in ports)
    try:
        for base in (first, second):
            assert await asyncio.to_thread(wait_until, lambda b=base: answers(b + "/readyz"), 20)
        async with aiohttp.ClientSession() as session:
            key = await _new_key(session, first)
            url = "/api/v1/chat/completions"
            headers = {**bearer(key), "Content-Type": "application/json"}
            held = await session.post(first + url, data=_free_stream_body(), headers=headers)
            assert held.status == 200
            await held.content.readline()  # the stream is under way
            stop(procs[0], signal.SIGKILL)
            killed_at = time.monotonic()
            held.close()
            refused = await session.post(second + url, data=_free_stream_body(), headers=headers)
            assert refused.status == 429  # the dead gateway's request still holds the place
            refused.close()
            admitted_after = None
            for _ in range(100):  # bounded: 10 s
                resp = await session.post(second + url, data=_free_stream_body(), headers=headers)
                status = resp.status
                resp.close()
                if status == 200:
                    admitted_after = time.monotonic() - killed_at
                    break
                await asyncio.sleep(0.1)
            assert admitted_after is not None, "the dead gateway's place was never given back"
            # Given back once its expiry passed: the reservation timeout after its admission or
            # last renewal (every timeout / 3), so within the timeout of the kill.
            assert admitted_after <= timeout + 1.5
    finally:
        for proc in procs:
            stop(proc)


async def _new_key(session: aiohttp.ClientSession, base: str) -> str:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with session.post(base + "/admin/v1/accounts", json={"name": "k"}, headers=admin) as r:
        account: dict[str, Any] = await r.json()
    keys_url = f"{base}/admin/v1/accounts/{account['id']}/keys"
    async with session.post(keys_url, json={"name": "k"}, headers=admin) as r:
        made: dict[str, Any] = await r.json()
    return str(made["key"])
