"""A gateway with the simulated payment side (a real HTTP server on loopback) behind its Credits
API, on a clock the tests move; shared by the API and the page tests."""

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.api.signing import sign
from gateway.app import create_app
from gateway.clock import ManualClock
from gateway.runtime.simulated_payments import SimulatedPayments
from gateway.state import CLOCK
from tests.support import ThreadedServer, admin_headers, bearer, make_settings, new_account

REQUEST_SECRET = "payreq-secret-3e9d"
WEBHOOK_SECRET = "whsec-credits-77a1"


@dataclass
class Credits:
    client: TestClient
    payments: SimulatedPayments
    account_id: str
    manager: str  # a management key of the account
    key: str  # an ordinary key of the account

    @property
    def clock(self) -> ManualClock:
        clock = self.client.app[CLOCK]
        assert isinstance(clock, ManualClock)
        return clock

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {**bearer(self.manager), **kwargs.pop("headers", {})}
        resp = await self.client.request(method, path, headers=headers, **kwargs)
        return resp.status, await resp.json()

    async def checkout(self, amount: str = "10.00", method: str = "card", **kw: Any) -> Any:
        status, body = await self.call(
            "POST", "/api/v1/credits/checkout", json={"amount": amount, "method": method}, **kw
        )
        assert status in (200, 201), body
        return body["data"]

    async def rows(self) -> list[dict[str, Any]]:
        status, body = await self.call("GET", "/api/v1/credits/purchases")
        assert status == 200, body
        found: list[dict[str, Any]] = body["data"]
        return found

    async def webhook(self, kind: str, data: dict[str, Any]) -> tuple[int, Any]:
        """A payment webhook signed at the gateway's clock (which the tests move)."""
        body = orjson.dumps({"id": f"evt-{time.monotonic_ns()}", "type": kind, "data": data})
        signature = sign(WEBHOOK_SECRET, body, int(self.clock.now()))
        resp = await self.client.post(
            "/webhooks/payments",
            data=body,
            headers={"Gateway-Signature": signature, "Content-Type": "application/json"},
        )
        return resp.status, await resp.json()


async def management_key(client: TestClient, account_id: str) -> str:
    resp = await client.post(
        f"/admin/v1/accounts/{account_id}/keys",
        json={"name": "manager", "management": True},
        headers=admin_headers(),
    )
    assert resp.status == 201
    key: str = (await resp.json())["key"]
    return key


@pytest.fixture
def payment_side() -> Any:
    payments = SimulatedPayments(REQUEST_SECRET, WEBHOOK_SECRET)
    server = ThreadedServer(payments.app()).start()
    payments.base_url = server.url
    yield payments
    server.stop()


@pytest.fixture
async def credits_env(
    redis_url: str, provider: ThreadedServer, payment_side: SimulatedPayments
) -> AsyncIterator[Credits]:
    settings = make_settings(
        redis_url,
        provider.url,
        payments_webhook_secret=WEBHOOK_SECRET,
        payments_request_url=f"{payment_side.base_url}/requests",
        payments_request_secret=REQUEST_SECRET,
        topup_webhook_url=f"{payment_side.base_url}/requests",
        topup_webhook_secret=REQUEST_SECRET,
        topup_poll_seconds=0.05,
    )
    app = create_app(settings, clock=ManualClock(time.time()))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        payment_side.gateway_url = str(client.make_url("")).rstrip("/")
        account_id, key = await new_account(client)
        manager = await management_key(client, account_id)
        yield Credits(client, payment_side, account_id, manager, key)
