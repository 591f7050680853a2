"""The outbox's requests to the payment side when it is away: an auto top-up request is given up
after `topup_max_attempts` (a later settlement asks again), a refund request never is (the credit
is already taken back, so the money must follow), not even when auto top-up is turned off; once
the payment side is back it is delivered, signed, once."""

import time
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.api.signing import SIGNATURE_HEADER, sign, verify
from gateway.app import create_app
from gateway.state import SERVICES, SETTINGS
from gateway.tasks.outbox_delivery import Destination, OutboxDelivery, destinations
from metering.payments.outbox import RefundRequest, TopupRequest
from tests.api.credits_support import REQUEST_SECRET, WEBHOOK_SECRET, management_key
from tests.support import ThreadedServer, admin_headers, bearer, chat, make_settings, new_account

RECEIVED = web.AppKey("received", list)


async def _receive(request: web.Request) -> web.Response:
    body = await request.read()
    verify(REQUEST_SECRET, body, request.headers.get(SIGNATURE_HEADER), time.time())
    request.app[RECEIVED].append(orjson.loads(body))
    return web.json_response({"ok": True})


async def test_a_refund_request_waits_for_the_payment_side_and_a_topup_request_gives_up(
    redis_url: str, provider: ThreadedServer
) -> None:
    away = "http://127.0.0.1:9/requests"  # nothing listens there
    settings = make_settings(
        redis_url,
        provider.url,
        payments_webhook_secret=WEBHOOK_SECRET,
        payments_request_url=away,
        payments_request_secret=REQUEST_SECRET,
        topup_webhook_url=away,
        topup_webhook_secret=REQUEST_SECRET,
        topup_poll_seconds=3600,  # the passes below are the only ones
        topup_max_attempts=1,
    )
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as c:
        account_id, key = await new_account(c)
        manager = await management_key(c, account_id)
        paid = {"account_id": account_id, "amount": "10.00", "method": "card", "payment_id": "p1"}
        body = orjson.dumps({"id": "evt-p1", "type": "payment.succeeded", "data": paid})
        signature = sign(WEBHOOK_SECRET, body, int(time.time()))
        resp = await c.post(
            "/webhooks/payments", data=body, headers={"Gateway-Signature": signature}
        )
        assert resp.status == 200
        resp = await c.put(
            f"/admin/v1/accounts/{account_id}/auto-topup",
            json={"threshold": "20.00", "amount": "20.00"},
            headers=admin_headers(),
        )
        assert resp.status == 200
        resp = await c.post("/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key))
        assert resp.status == 200  # its settlement queues a top-up request
        resp = await c.get(f"/admin/v1/accounts/{account_id}/ledger", headers=admin_headers())
        purchase_id = next(e["ref"] for e in (await resp.json())["data"] if e["kind"] == "purchase")
        resp = await c.post(
            f"/api/v1/credits/purchases/{purchase_id}/refund", headers=bearer(manager)
        )
        assert resp.status == 200
        outbox = c.app[SERVICES].outbox

        async def waiting() -> list[type]:
            found: list[Any] = []
            for _ in range(50):
                found = [type(e) for e in await outbox.pending(account_id)]
                if len(found) == 2 or (RefundRequest in found and TopupRequest not in found):
                    break
            return found

        assert sorted(t.__name__ for t in await waiting()) == ["RefundRequest", "TopupRequest"]
        delivery = OutboxDelivery(outbox, destinations(c.app[SETTINGS]), max_attempts=1)
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            assert await delivery.deliver_due(session) == 0
        assert [t.__name__ for t in await waiting()] == ["RefundRequest"]
        # A later settlement asks for a top-up again; turning auto top-up off then drops that
        # request, and keeps the refund's.
        more = {"amount": "5.00", "method": "card", "idempotency_key": "more"}
        resp = await c.post(
            f"/admin/v1/accounts/{account_id}/purchases", json=more, headers=admin_headers()
        )
        assert resp.status == 201
        resp = await c.post("/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key))
        assert resp.status == 200
        assert sorted(t.__name__ for t in await waiting()) == ["RefundRequest", "TopupRequest"]
        resp = await c.put("/api/v1/credits/auto-topup", data=b"null", headers=bearer(manager))
        assert resp.status == 200
        assert [t.__name__ for t in await waiting()] == ["RefundRequest"]

        receiver = web.Application()
        receiver[RECEIVED] = []
        receiver.router.add_post("/requests", _receive)
        server = ThreadedServer(receiver).start()
        try:
            back = OutboxDelivery(
                outbox, {RefundRequest: Destination(f"{server.url}/requests", REQUEST_SECRET)}, 1
            )
            async with aiohttp.ClientSession(timeout=timeout) as session:
                assert await back.deliver_due(session) == 1
                assert await back.deliver_due(session) == 0
            [event] = receiver[RECEIVED]
            assert event["type"] == "refund.requested" and event["data"]["amount"] == "10.00"
            refunded = Decimal(event["data"]["refunded"])  # less what the request used
            assert Decimal("9.99") < refunded < Decimal("10.00")
            assert await outbox.pending(account_id) == []
        finally:
            server.stop()


async def test_a_delivery_lease_is_released_only_by_its_holder(
    redis_url: str, provider: ThreadedServer
) -> None:
    settings = make_settings(redis_url, provider.url)
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as c:
        account_id, _ = await new_account(c)
        outbox = c.app[SERVICES].outbox
        assert await outbox.take_lease(account_id, "one")
        assert not await outbox.take_lease(account_id, "two")
        assert not await outbox.release_lease(account_id, "two")  # not its lease to end
        assert not await outbox.take_lease(account_id, "two")
        assert await outbox.release_lease(account_id, "one")
        assert await outbox.take_lease(account_id, "two")
        assert await outbox.release_lease(account_id, "two")
