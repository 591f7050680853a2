"""Signed payment webhooks through HTTP: credited once, refunded, forged or stale ones refused."""

import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.api.signing import sign
from gateway.app import create_app
from tests.support import ThreadedServer, account_state, make_settings, new_account

SECRET = "whsec-test-5b1c"


@pytest.fixture
async def hook_client(redis_url: str, provider: ThreadedServer) -> AsyncIterator[TestClient]:
    app = create_app(make_settings(redis_url, provider.url, payments_webhook_secret=SECRET))
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def _send(
    c: TestClient,
    event: dict[str, Any],
    *,
    secret: str = SECRET,
    stamp: int | None = None,
    tamper: bool = False,
) -> tuple[int, dict[str, Any]]:
    body = orjson.dumps(event)
    signature = sign(secret, body, int(time.time()) if stamp is None else stamp)
    if tamper:
        body = body.replace(b"10.00", b"99.00")
    resp = await c.post(
        "/webhooks/payments",
        data=body,
        headers={"Gateway-Signature": signature, "Content-Type": "application/json"},
    )
    return resp.status, await resp.json()


def _paid(account_id: str, payment_id: str = "pay_1", amount: str = "10.00") -> dict[str, Any]:
    return {
        "id": f"evt-{payment_id}",
        "type": "payment.succeeded",
        "data": {
            "account_id": account_id,
            "amount": amount,
            "method": "card",
            "payment_id": payment_id,
        },
    }


async def test_a_payment_credits_once_however_often_it_arrives(hook_client: TestClient) -> None:
    account_id, _ = await new_account(hook_client)
    status, body = await _send(hook_client, _paid(account_id))
    assert status == 200 and body["duplicate"] is False
    assert body["purchase"]["amount"] == "10.00" and body["purchase"]["fee"] == "0.80"
    status, body = await _send(hook_client, _paid(account_id))
    assert status == 200 and body["duplicate"] is True
    state = await account_state(hook_client, account_id)
    assert state["balance"] == "10.00" and state["lifetime_purchases"] == "10.00"


async def test_a_payment_refund_takes_the_credits_back(hook_client: TestClient) -> None:
    account_id, _ = await new_account(hook_client)
    await _send(hook_client, _paid(account_id, "pay_9"))
    refund = {
        "id": "evt-r",
        "type": "payment.refunded",
        "data": {"account_id": account_id, "payment_id": "pay_9"},
    }
    status, body = await _send(hook_client, refund)
    assert status == 200 and body["refunded"] == "10.00"
    status, body = await _send(hook_client, refund)
    assert status == 200 and body["refunded"] == "10.00"  # the same refund, once
    assert (await account_state(hook_client, account_id))["balance"] == "0.00"


async def test_forged_stale_and_altered_webhooks_change_nothing(hook_client: TestClient) -> None:
    account_id, _ = await new_account(hook_client)
    event = _paid(account_id, "pay_x")
    assert (await _send(hook_client, event, secret="wrong"))[0] == 401
    assert (await _send(hook_client, event, tamper=True))[0] == 401
    stale = int(time.time()) - 301
    status, body = await _send(hook_client, event, stamp=stale)
    assert status == 400 and body["error"]["metadata"]["error_type"] == "stale_signature"
    resp = await hook_client.post("/webhooks/payments", data=orjson.dumps(event))
    assert resp.status == 401
    assert (await account_state(hook_client, account_id))["balance"] == "0.00"


async def test_webhooks_are_off_without_a_secret(client: TestClient) -> None:
    resp = await client.post("/webhooks/payments", data=b"{}")
    assert resp.status == 404


async def test_a_payment_side_refund_takes_back_even_what_is_held(
    hook_client: TestClient,
) -> None:
    from gateway.state import SERVICES

    account_id, key = await new_account(hook_client)
    await _send(hook_client, _paid(account_id, "pay_h"))
    key_hash = hashlib.sha256(key.encode()).hexdigest()
    await hook_client.app[SERVICES].metering.admit(
        account_id, key_hash, f"gen-{account_id}-bb", 9_990_000_000, paid=True, now=time.time()
    )
    refund = {
        "id": "evt-rh",
        "type": "payment.refunded",
        "data": {"account_id": account_id, "payment_id": "pay_h"},
    }
    status, body = await _send(hook_client, refund)
    assert status == 200 and body["refunded"] == "10.00"
    assert (await account_state(hook_client, account_id))["balance"] == "0.00"


async def test_odd_signature_headers_are_401s_not_crashes(hook_client: TestClient) -> None:
    for header in (
        "t=\u00b2,v1=00",
        "t=1700000000,v1=\u00e9",
        "v1=abc",
        "t=,v1=",
        "garbage",
        "t=99999999999999999999,v1=00",
    ):
        resp = await hook_client.post(
            "/webhooks/payments", data=b"{}", headers={"Gateway-Signature": header}
        )
        assert resp.status == 401, header


async def test_malformed_events_are_400s_that_name_the_field(hook_client: TestClient) -> None:
    account_id, _ = await new_account(hook_client)

    def paid(**changes: Any) -> dict[str, Any]:
        event = _paid(account_id, "pay_bad")
        for name, value in changes.items():
            target = event if name in ("id", "type", "data") else event["data"]
            if value is ...:
                del target[name]
            else:
                target[name] = value
        return event

    cases: list[tuple[dict[str, Any], str]] = [
        (paid(type=["payment.succeeded"]), "type"),
        (paid(type="payment.pending"), "type"),
        (paid(id=...), "id"),
        (paid(id=None), "id"),
        (paid(data=...), "data"),
        (paid(data=[account_id]), "data"),
        (paid(account_id=7), "account_id"),
        (paid(amount=...), "amount"),
        (paid(amount=10.5), "amount"),
        (paid(amount="10.001"), "amount"),
        (paid(amount="100000.01"), "amount"),
        (paid(method="cash"), "method"),
        (paid(payment_id=""), "payment_id"),
        ({"id": "e", "type": "payment.refunded", "data": {"account_id": account_id}}, "payment_id"),
    ]
    for event, field in cases:
        status, body = await _send(hook_client, event)
        assert status == 400, (event, body)
        assert body["error"]["metadata"]["field"] == field, (event, body)
        assert field in body["error"]["message"], (event, body)
    status, _ = await _send(hook_client, paid(account_id="no-such-account"))
    assert status == 404
    state = await account_state(hook_client, account_id)
    assert state["balance"] == "0.00" and state["lifetime_purchases"] == "0.00"
