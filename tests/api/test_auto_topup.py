"""Auto top-up: one signed request when a settlement crosses the threshold, none while it is
outstanding, retried with backoff, and kept in Redis across a restart."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.api.signing import SIGNATURE_HEADER, verify
from gateway.app import create_app
from gateway.state import SERVICES
from tests.support import (
    ThreadedServer,
    account_state,
    admin_headers,
    bearer,
    chat,
    make_settings,
    new_account,
)

SECRET = "topup-secret-91ac"
RECEIVED = web.AppKey("received", list)
FAILURES = web.AppKey("failures", dict)


async def _receive(request: web.Request) -> web.Response:
    body = await request.read()
    event = orjson.loads(body)
    account = event["data"]["account_id"]
    if request.app[FAILURES].get(account, 0) > 0:
        request.app[FAILURES][account] -= 1
        return web.Response(status=500)
    verify(SECRET, body, request.headers.get(SIGNATURE_HEADER), time.time())
    request.app[RECEIVED].append((event, request.headers.get("Idempotency-Key")))
    return web.json_response({"ok": True})


@pytest.fixture(scope="module")
def receiver() -> Any:
    app = web.Application()
    app[RECEIVED] = []
    app[FAILURES] = {}
    app.router.add_post("/topup", _receive)
    server = ThreadedServer(app).start()
    yield server
    server.stop()


@pytest.fixture
async def make(redis_url: str, provider: ThreadedServer) -> AsyncIterator[Callable[..., Any]]:
    clients: list[TestClient] = []

    async def build(url: str, poll: float = 0.05) -> TestClient:
        settings = make_settings(
            redis_url,
            provider.url,
            topup_webhook_url=url,
            topup_webhook_secret=SECRET,
            topup_poll_seconds=poll,
        )
        c = TestClient(TestServer(create_app(settings), host="127.0.0.1"))
        await c.start_server()
        clients.append(c)
        return c

    yield build
    for c in clients:
        await c.close()


def _events(receiver: ThreadedServer, account_id: str) -> list[dict[str, Any]]:
    return [e for e, _ in receiver.app[RECEIVED] if e["data"]["account_id"] == account_id]


async def _wait_for(check: Callable[[], bool], seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def _topup(c: TestClient, account_id: str, threshold: str, amount: str) -> None:
    resp = await c.put(
        f"/admin/v1/accounts/{account_id}/auto-topup",
        json={"threshold": threshold, "amount": amount},
        headers=admin_headers(),
    )
    assert resp.status == 200, await resp.text()


async def test_one_request_until_the_purchase_arrives(
    make: Callable[..., Any], receiver: ThreadedServer
) -> None:
    c = await make(receiver.url + "/topup")
    account_id, key = await new_account(c, purchase="1.00")
    await _topup(c, account_id, "1.00", "20.00")
    for _ in range(3):
        resp = await c.post("/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key))
        assert resp.status == 200
    await _wait_for(lambda: len(_events(receiver, account_id)) == 1)
    event = _events(receiver, account_id)[0]
    assert event["type"] == "topup.requested"
    assert event["data"] == {
        "account_id": account_id,
        "amount": "20.00",
        "threshold": "1.00",
        "balance": "0.9999895",
    }
    await asyncio.sleep(0.3)
    assert len(_events(receiver, account_id)) == 1  # one outstanding at a time
    state = await account_state(c, account_id)
    assert state["auto_topup"]["request_outstanding"] is True
    resp = await c.post(
        f"/admin/v1/accounts/{account_id}/purchases",
        json={"amount": "20.00", "method": "card", "idempotency_key": event["id"]},
        headers=admin_headers(),
    )
    assert resp.status == 201
    assert (await account_state(c, account_id))["auto_topup"]["request_outstanding"] is False
    await _topup(c, account_id, "100.00", "50.00")
    await c.post("/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key))
    await _wait_for(lambda: len(_events(receiver, account_id)) == 2)
    assert _events(receiver, account_id)[1]["data"]["amount"] == "50.00"


async def test_failed_deliveries_are_retried(
    make: Callable[..., Any], receiver: ThreadedServer
) -> None:
    c = await make(receiver.url + "/topup")
    account_id, key = await new_account(c, purchase="1.00")
    receiver.app[FAILURES][account_id] = 2
    await _topup(c, account_id, "1.00", "5.00")
    await c.post("/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key))
    await _wait_for(lambda: len(_events(receiver, account_id)) == 1, seconds=15)
    assert receiver.app[FAILURES][account_id] == 0


async def test_requests_survive_a_restart(
    make: Callable[..., Any], receiver: ThreadedServer
) -> None:
    down = await make(receiver.url + "/topup", poll=3600)  # stops before it ever delivers
    account_id, key = await new_account(down, purchase="1.00")
    await _topup(down, account_id, "1.00", "5.00")
    await down.post("/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key))
    await asyncio.sleep(0.3)
    await down.close()
    assert _events(receiver, account_id) == []
    await make(receiver.url + "/topup")  # "restarted" with a reachable receiver
    await _wait_for(lambda: len(_events(receiver, account_id)) == 1)


async def test_auto_topup_input(make: Callable[..., Any], receiver: ThreadedServer) -> None:
    c = await make(receiver.url + "/topup")
    account_id, _ = await new_account(c)
    url = f"/admin/v1/accounts/{account_id}/auto-topup"
    bad = await c.put(url, json={"threshold": "5.00"}, headers=admin_headers())
    assert bad.status == 400 and (await bad.json())["error"]["metadata"]["field"] == "amount"
    bad = await c.put(url, json={"threshold": "5.001", "amount": "1"}, headers=admin_headers())
    assert bad.status == 400
    off = await c.put(url, data=b"null", headers=admin_headers())
    assert off.status == 200 and (await off.json())["auto_topup"] is None


async def test_only_the_answering_purchase_or_a_failure_clears_the_request(
    make: Callable[..., Any], receiver: ThreadedServer
) -> None:
    c = await make(receiver.url + "/topup")
    account_id, key = await new_account(c, purchase="1.00")
    await _topup(c, account_id, "1.00", "20.00")
    await c.post("/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key))
    await _wait_for(lambda: len(_events(receiver, account_id)) == 1)
    other = await c.post(
        f"/admin/v1/accounts/{account_id}/purchases",
        json={"amount": "0.01", "method": "card", "idempotency_key": "x"},
        headers=admin_headers(),
    )
    assert other.status == 201
    assert (await account_state(c, account_id))["auto_topup"]["request_outstanding"] is True
    outbox = c.app[SERVICES].outbox
    assert await outbox.answered(account_id, "evt-not-this-one") is False
    assert await outbox.answered(account_id, _events(receiver, account_id)[0]["id"]) is True
    assert (await account_state(c, account_id))["auto_topup"]["request_outstanding"] is False


async def test_turning_it_off_drops_what_was_queued(
    make: Callable[..., Any], receiver: ThreadedServer
) -> None:
    c = await make(receiver.url + "/topup", poll=3600)  # nothing is delivered meanwhile
    account_id, key = await new_account(c, purchase="1.00")
    await _topup(c, account_id, "1.00", "20.00")
    await c.post("/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key))
    assert len(await c.app[SERVICES].outbox.pending(account_id)) == 1
    off = await c.put(
        f"/admin/v1/accounts/{account_id}/auto-topup", data=b"null", headers=admin_headers()
    )
    assert off.status == 200
    assert await c.app[SERVICES].outbox.pending(account_id) == []


def test_a_topup_url_needs_a_signing_secret() -> None:
    from config.errors import ConfigError
    from config.settings import load_settings

    with pytest.raises(ConfigError, match="topup_webhook_secret"):
        load_settings(None, topup_webhook_url="http://127.0.0.1:9/x")
