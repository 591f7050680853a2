"""The account holder's Credits API against a real Redis and the simulated payment side (a real
HTTP server): checkouts pending until their payment lands, exactly once under 50 concurrent
calls, expiry and late payments, the Refund button and its refusals, auto top-up, fees."""

import asyncio
import hashlib
import time
from decimal import Decimal
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.runtime.simulated_payments import SimulatedPayments
from gateway.state import SERVICES
from tests.api.credits_support import REQUEST_SECRET, Credits, management_key
from tests.support import (
    ThreadedServer,
    account_state,
    admin_headers,
    bearer,
    chat,
    make_settings,
    new_account,
)


def _requests_of(env: Credits, kind: str) -> list[dict[str, Any]]:
    return [r for r in env.payments.requests if r["type"] == kind]


async def _delivered(env: Credits, kind: str, count: int) -> list[dict[str, Any]]:
    for _ in range(200):
        found = _requests_of(env, kind)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"{kind}: {len(_requests_of(env, kind))} of {count} arrived")


async def _balance(env: Credits) -> Decimal:
    return Decimal((await account_state(env.client, env.account_id))["balance"])


async def test_a_checkout_is_pending_until_its_payment_lands(credits_env: Credits) -> None:
    env = credits_env
    opened = await env.checkout("10.00", headers={"Idempotency-Key": "add-1"})
    assert opened["status"] == "pending"
    assert (opened["amount"], opened["fee"], opened["total_charged"]) == ("10.00", "0.80", "10.80")
    assert opened["checkout_url"] == f"{env.payments.base_url}/pay/{opened['id']}"
    asked = _requests_of(env, "checkout.requested")
    assert len(asked) == 1 and asked[0]["data"]["total"] == "10.80"
    assert asked[0]["data"]["return_url"] == str(env.client.make_url("/credits"))
    assert asked[0]["id"] == opened["id"]  # the payment side dedupes on it
    assert await _balance(env) == 0  # nothing before the payment
    [row] = await env.rows()
    assert row["id"] == opened["id"] and row["status"] == "pending"
    assert row["not_refundable_reason"] == "not_paid"

    assert await env.payments.pay(opened["id"]) == 200
    assert await env.payments.pay(opened["id"]) == 200  # delivered twice: credited once
    assert await _balance(env) == Decimal("10.00")
    [row] = await env.rows()
    assert row["status"] == "completed" and row["checkout_id"] == opened["id"]
    assert row["id"].startswith("pur-") and row["refundable"] == "10.00"
    assert row["late"] is False and row["refundable_until"] is not None
    again = await env.checkout("10.00", headers={"Idempotency-Key": "add-1"})
    assert again == row  # paid: the purchase it became
    assert len(_requests_of(env, "checkout.requested")) == 1


async def test_fifty_concurrent_checkouts_with_one_key_open_one(credits_env: Credits) -> None:
    env = credits_env
    calls = [
        env.call(
            "POST",
            "/api/v1/credits/checkout",
            json={"amount": "25.00", "method": "alipay"},
            headers={"Idempotency-Key": "double-click"},
        )
        for _ in range(50)
    ]
    answers = await asyncio.gather(*calls)
    assert sorted(status for status, _ in answers) == [200] * 49 + [201]
    assert {body["data"]["id"] for _, body in answers} == {answers[0][1]["data"]["id"]}
    assert all(body["data"]["checkout_url"] for _, body in answers)
    assert len(_requests_of(env, "checkout.requested")) == 1
    checkout_id = answers[0][1]["data"]["id"]
    paid = await asyncio.gather(*(env.payments.pay(checkout_id) for _ in range(50)))
    assert paid == [200] * 50
    assert await _balance(env) == Decimal("25.00")
    rows = await env.rows()
    assert [r["status"] for r in rows] == ["completed"]


async def test_a_key_used_again_with_another_body_is_refused(credits_env: Credits) -> None:
    env = credits_env
    await env.checkout("10.00", headers={"Idempotency-Key": "k"})
    status, body = await env.call(
        "POST",
        "/api/v1/credits/checkout",
        json={"amount": "11.00", "method": "card"},
        headers={"Idempotency-Key": "k"},
    )
    assert status == 409 and body["error"]["metadata"]["error_type"] == "idempotency_conflict"


async def test_what_a_checkout_refuses(credits_env: Credits) -> None:
    env = credits_env
    for bad, field in (
        ({"amount": "0", "method": "card"}, "amount"),
        ({"amount": "10.001", "method": "card"}, "amount"),
        ({"amount": 10.5, "method": "card"}, "amount"),
        ({"amount": "100000.01", "method": "card"}, "amount"),
        ({"amount": "10.00", "method": "cheque"}, "method"),
        ({"method": "card"}, "amount"),
    ):
        status, body = await env.call("POST", "/api/v1/credits/checkout", json=bad)
        assert status == 400, bad
        assert body["error"]["metadata"]["field"] == field, bad
    resp = await env.client.post(
        "/api/v1/credits/checkout",
        json={"amount": "10.00", "method": "card"},
        headers=bearer(env.key),
    )
    assert resp.status == 403  # an ordinary key
    assert "management key" in (await resp.json())["error"]["message"]
    resp = await env.client.post("/api/v1/credits/checkout", json={"amount": "1.00"})
    assert resp.status == 401
    for n in range(10):
        await env.checkout("1.00", headers={"Idempotency-Key": f"open-{n}"})
    status, body = await env.call(
        "POST", "/api/v1/credits/checkout", json={"amount": "1.00", "method": "card"}
    )
    assert status == 409 and body["error"]["metadata"]["error_type"] == "too_many_checkouts"
    assert await _balance(env) == 0


async def test_an_unpaid_checkout_expires_and_a_late_payment_still_credits(
    credits_env: Credits,
) -> None:
    env = credits_env
    opened = await env.checkout("15.00")
    env.clock.advance(3600)
    [row] = await env.rows()
    assert row["status"] == "failed" and row["failure_reason"] == "expired"
    assert row["checkout_url"] is None
    # Expired checkouts no longer count as open: new ones can be made.
    await env.checkout("1.00")
    status, body = await env.webhook(
        "payment.succeeded",
        {
            "account_id": env.account_id,
            "amount": "15.00",
            "method": "card",
            "payment_id": "pay-late",
            "checkout_id": opened["id"],
        },
    )
    assert status == 200 and body["late"] is True and body["duplicate"] is False
    assert await _balance(env) == Decimal("15.00")
    paid = [r for r in await env.rows() if r["checkout_id"] == opened["id"]]
    assert [(r["status"], r["late"]) for r in paid] == [("completed", True)]
    resp = await env.client.get(
        f"/admin/v1/accounts/{env.account_id}/ledger", headers=admin_headers()
    )
    [entry] = [e for e in (await resp.json())["data"] if e["kind"] == "purchase"]
    assert entry["amount"] == "15.00" and entry["note"] == "paid after its checkout expired"


async def test_a_declined_checkout_fails(credits_env: Credits) -> None:
    env = credits_env
    opened = await env.checkout("5.00")
    assert await env.payments.decline(opened["id"]) == 200
    [row] = await env.rows()
    assert (row["status"], row["failure_reason"]) == ("failed", "failed")
    status, body = await env.webhook(
        "payment.failed", {"account_id": env.account_id, "checkout_id": opened["id"]}
    )
    assert status == 200 and body["checkout_closed"] is False  # failed already
    status, body = await env.webhook(
        "payment.failed", {"account_id": "someoneelse", "checkout_id": opened["id"]}
    )
    assert status in (400, 404)


async def test_the_payment_side_away_charges_nothing(
    redis_url: str, provider: ThreadedServer
) -> None:
    settings = make_settings(
        redis_url,
        provider.url,
        payments_request_url="http://127.0.0.1:9/requests",
        payments_request_secret=REQUEST_SECRET,
    )
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as client:
        account_id, _ = await new_account(client)
        manager = await management_key(client, account_id)
        resp = await client.post(
            "/api/v1/credits/checkout",
            json={"amount": "10.00", "method": "card"},
            headers={**bearer(manager), "Idempotency-Key": "retry-me"},
        )
        body = await resp.json()
        assert resp.status == 502 and body["error"]["metadata"]["error_type"] == (
            "payment_unavailable"
        )
        assert "same Idempotency-Key" in body["error"]["message"]
        rows = await client.get("/api/v1/credits/purchases", headers=bearer(manager))
        [row] = (await rows.json())["data"]
        assert row["status"] == "pending" and row["checkout_url"] is None
        state = await account_state(client, account_id)
        assert state["balance"] == "0.00"


async def test_a_failing_payment_side_is_asked_once_by_concurrent_calls(
    redis_url: str, provider: ThreadedServer
) -> None:
    asked: list[float] = []

    async def failing(request: web.Request) -> web.Response:
        asked.append(time.monotonic())
        await asyncio.sleep(1.0)  # every call of the 50 has come meanwhile
        return web.Response(status=503)

    side = web.Application()
    side.router.add_post("/requests", failing)
    server = ThreadedServer(side).start()
    settings = make_settings(
        redis_url,
        provider.url,
        payments_request_url=f"{server.url}/requests",
        payments_request_secret=REQUEST_SECRET,
    )
    try:
        async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as client:
            account_id, _ = await new_account(client)
            manager = await management_key(client, account_id)
            headers = {**bearer(manager), "Idempotency-Key": "same"}
            body = {"amount": "10.00", "method": "card"}

            async def call() -> int:
                resp = await client.post("/api/v1/credits/checkout", json=body, headers=headers)
                return resp.status

            started = time.monotonic()
            assert await asyncio.gather(*(call() for _ in range(50))) == [502] * 50
            assert len(asked) == 1 and time.monotonic() - started < 5
            started = time.monotonic()
            assert await call() == 502  # a retry asks again at once
            assert len(asked) == 2 and time.monotonic() - started < 5  # not the 11 s wait
    finally:
        server.stop()


async def test_the_payment_side_sends_the_holder_back_to_the_public_url(
    redis_url: str, provider: ThreadedServer, payment_side: SimulatedPayments
) -> None:
    settings = make_settings(
        redis_url,
        provider.url,
        payments_request_url=f"{payment_side.base_url}/requests",
        payments_request_secret=REQUEST_SECRET,
        public_url="https://gw.example.com/",
    )
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as client:
        account_id, _ = await new_account(client)
        manager = await management_key(client, account_id)
        resp = await client.post(
            "/api/v1/credits/checkout",
            json={"amount": "10.00", "method": "card"},
            headers=bearer(manager),
        )
        assert resp.status == 201
    [asked] = [r for r in payment_side.requests if r["type"] == "checkout.requested"]
    assert asked["data"]["return_url"] == "https://gw.example.com/credits"


async def _bought(env: Credits, amount: str = "10.00", method: str = "card") -> str:
    opened = await env.checkout(amount, method)
    assert await env.payments.pay(opened["id"]) == 200
    row = next(r for r in await env.rows() if r["checkout_id"] == opened["id"])
    purchase_id: str = row["id"]
    return purchase_id


async def test_the_refund_button_refunds_the_unused_part_and_tells_the_payment_side(
    credits_env: Credits,
) -> None:
    env = credits_env
    purchase_id = await _bought(env)
    resp = await env.client.post(
        "/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(env.key)
    )
    assert resp.status == 200
    used = Decimal("10.00") - await _balance(env)
    assert used > 0
    status, body = await env.call("POST", f"/api/v1/credits/purchases/{purchase_id}/refund")
    assert status == 200, body
    refund = body["data"]
    assert Decimal(refund["refunded"]) == Decimal("10.00") - used
    assert Decimal(refund["not_refunded"]) == used
    assert refund["fee_kept"] == "0.80" and refund["fee_refunded"] == "0.00"
    assert "The fee of $0.80 is never refunded" in refund["explanation"]
    assert await _balance(env) == 0
    [sent] = await _delivered(env, "refund.requested", 1)
    assert sent["data"]["purchase_id"] == purchase_id
    assert sent["data"]["payment_id"].startswith("simpay-")
    assert Decimal(sent["data"]["refunded"]) == Decimal(refund["refunded"])
    [row] = await env.rows()
    assert row["status"] == "partially_refunded" and row["not_refundable_reason"] == "refunded"
    status, again = await env.call("POST", f"/api/v1/credits/purchases/{purchase_id}/refund")
    assert status == 200 and again["data"]["refunded"] == refund["refunded"]
    # The payment side's own word of the refund it then made changes nothing.
    payment = {"account_id": env.account_id, "payment_id": sent["data"]["payment_id"]}
    status, _ = await env.webhook("payment.refunded", payment)
    assert status == 200 and await _balance(env) == 0
    state = await account_state(env.client, env.account_id)
    assert Decimal(state["refunded"]) == Decimal(refund["refunded"])
    await asyncio.sleep(0.3)
    assert len(_requests_of(env, "refund.requested")) == 1


async def test_the_operators_refund_sends_no_request(credits_env: Credits) -> None:
    env = credits_env
    purchase_id = await _bought(env)
    resp = await env.client.post(
        f"/admin/v1/purchases/{purchase_id}/refund", headers=admin_headers()
    )
    assert resp.status == 200
    await asyncio.sleep(0.3)  # six outbox passes
    assert _requests_of(env, "refund.requested") == []


async def test_fifty_concurrent_refunds_refund_once(credits_env: Credits) -> None:
    env = credits_env
    purchase_id = await _bought(env, "20.00")
    path = f"/api/v1/credits/purchases/{purchase_id}/refund"
    answers = await asyncio.gather(*(env.call("POST", path) for _ in range(50)))
    assert {status for status, _ in answers} == {200}
    assert {body["data"]["refunded"] for _, body in answers} == {"20.00"}
    state = await account_state(env.client, env.account_id)
    assert (state["balance"], state["refunded"]) == ("0.00", "20.00")
    await _delivered(env, "refund.requested", 1)
    await asyncio.sleep(0.3)
    assert len(_requests_of(env, "refund.requested")) == 1
    [row] = await env.rows()
    assert row["status"] == "refunded" and row["refunded"] == "20.00"


async def test_what_the_refund_button_refuses(credits_env: Credits) -> None:
    env = credits_env
    crypto = await _bought(env, "10.00", "crypto")
    status, body = await env.call("POST", f"/api/v1/credits/purchases/{crypto}/refund")
    assert status == 409 and body["error"]["metadata"]["reason"] == "crypto"
    assert body["error"]["message"] == "crypto purchases are never refundable"
    card = await _bought(env, "10.00")
    rows = {r["id"]: r for r in await env.rows()}
    assert rows[crypto]["not_refundable_reason"] == "crypto"
    assert rows[card]["refundable"] == "10.00"
    resp = await env.client.post(
        f"/api/v1/credits/purchases/{card}/refund", headers=bearer(env.key)
    )
    assert resp.status == 403  # an ordinary key
    made = {"amount": "4.00", "method": "card", "idempotency_key": "wire-1"}
    resp = await env.client.post(
        f"/admin/v1/accounts/{env.account_id}/purchases", json=made, headers=admin_headers()
    )
    wired = (await resp.json())["id"]
    assert (await resp.json())["source"] == "operator"
    status, body = await env.call("POST", f"/api/v1/credits/purchases/{wired}/refund")
    assert status == 409 and body["error"]["metadata"]["reason"] == "operator_credited"
    rows = {r["id"]: r for r in await env.rows()}
    assert rows[wired]["not_refundable_reason"] == "operator_credited"
    for unknown in (f"pur-{env.account_id}-0000", "pur-other-0000", "nonsense"):
        status, body = await env.call("POST", f"/api/v1/credits/purchases/{unknown}/refund")
        assert status == 404, unknown
    other_account, _ = await new_account(env.client)
    other = await management_key(env.client, other_account)
    resp = await env.client.post(f"/api/v1/credits/purchases/{card}/refund", headers=bearer(other))
    assert resp.status == 404  # another account's management key
    resp = await env.client.get("/api/v1/credits/purchases", headers=bearer(other))
    assert (await resp.json())["data"] == []
    env.clock.advance(24 * 3600)
    rows = {r["id"]: r for r in await env.rows()}
    assert rows[card]["not_refundable_reason"] == "window_passed"
    status, body = await env.call("POST", f"/api/v1/credits/purchases/{card}/refund")
    assert status == 409 and body["error"]["metadata"]["reason"] == "too_old"
    assert (
        body["error"]["message"] == "purchases are refundable only within 24 hours of the purchase"
    )
    assert await _balance(env) == Decimal("24.00")


async def test_a_refund_of_credit_held_in_flight_says_so(credits_env: Credits) -> None:
    env = credits_env
    purchase_id = await _bought(env, "1.00")
    key_hash = hashlib.sha256(env.key.encode()).hexdigest()
    # A request in flight holds $0.90 of it (its gateway then dies: never settled).
    admitted = await env.client.app[SERVICES].metering.admit(
        env.account_id,
        key_hash,
        f"gen-{env.account_id}-aa",
        900_000_000,
        paid=True,
        now=env.clock.now(),
    )
    assert admitted.admitted
    status, body = await env.call("POST", f"/api/v1/credits/purchases/{purchase_id}/refund")
    assert status == 409 and body["error"]["metadata"]["reason"] == "in_flight"
    assert "held by requests in flight" in body["error"]["message"]
    assert _requests_of(env, "refund.requested") == []
    env.clock.advance(3600)  # past the reservation timeout: the orphaned hold is released
    status, body = await env.call("POST", f"/api/v1/credits/purchases/{purchase_id}/refund")
    assert status == 200 and body["data"]["refunded"] == "1.00"
    await _delivered(env, "refund.requested", 1)


async def test_used_up_purchases_are_not_refundable(credits_env: Credits) -> None:
    env = credits_env
    first = await _bought(env, "0.01")
    await _bought(env, "10.00")
    # Spend more than the first purchase: credits are used oldest purchase first.
    for _ in range(30):
        if await _balance(env) < Decimal("10.00"):
            break
        resp = await env.client.post(
            "/api/v1/chat/completions",
            json=chat("test/pricey", max_tokens=2000),
            headers=bearer(env.key),
        )
        assert resp.status == 200
    rows = {r["id"]: r for r in await env.rows()}
    assert rows[first]["not_refundable_reason"] == "used_up"
    status, body = await env.call("POST", f"/api/v1/credits/purchases/{first}/refund")
    assert status == 409 and body["error"]["metadata"]["reason"] == "nothing_left"


async def test_auto_topup_from_the_credits_api(credits_env: Credits) -> None:
    env = credits_env
    status, body = await env.call(
        "PUT", "/api/v1/credits/auto-topup", json={"threshold": "5.00", "amount": "20.00"}
    )
    assert status == 200
    assert body["data"]["auto_topup"] == {
        "threshold": "5.00",
        "amount": "20.00",
        "request_outstanding": False,
    }
    status, body = await env.call("GET", "/api/v1/credits/summary")
    assert body["data"]["auto_topup"]["amount"] == "20.00"
    status, body = await env.call("PUT", "/api/v1/credits/auto-topup", json={"threshold": "5.00"})
    assert status == 400 and body["error"]["metadata"]["field"] == "amount"
    status, body = await env.call("PUT", "/api/v1/credits/auto-topup", data=b"null")
    assert status == 200 and body["data"]["auto_topup"] is None
    resp = await env.client.put(
        "/api/v1/credits/auto-topup",
        json={"threshold": "1.00", "amount": "2.00"},
        headers=bearer(env.key),
    )
    assert resp.status == 403


async def test_the_summary_and_a_quote(credits_env: Credits) -> None:
    env = credits_env
    await _bought(env, "12.34")
    status, body = await env.call("GET", "/api/v1/credits/summary")
    assert status == 200
    summary = body["data"]
    assert summary["balance"] == "12.34" and summary["available"] == "12.34"
    assert summary["lifetime_purchases"] == "12.34" and summary["tier"] == "plus"
    assert summary["free_model_daily_requests"] == {"limit": 1000, "remaining": 1000, "used": 0}
    assert summary["checkout_available"] is True and summary["auto_topup_available"] is True
    [row] = await env.rows()
    assert (row["fee"], row["total_charged"]) == ("0.80", "13.14")  # the minimum card fee
    for amount, method, fee, total in (
        ("10.00", "card", "0.80", "10.80"),
        ("100.00", "card", "5.50", "105.50"),
        ("33.33", "card", "1.83", "35.16"),  # 5.5% is $1.83315: whole cents
        ("10.00", "crypto", "0.50", "10.50"),
    ):
        status, body = await env.call(
            "GET", f"/api/v1/credits/quote?amount={amount}&method={method}"
        )
        assert status == 200, body
        quote = body["data"]
        assert Decimal(quote["fee"]) == Decimal(fee), (amount, method, quote)
        assert Decimal(quote["total_charged"]) == Decimal(total)
        assert Decimal(quote["amount"]) + Decimal(quote["fee"]) == Decimal(quote["total_charged"])
    status, body = await env.call("GET", "/api/v1/credits/quote?amount=1e3")
    assert status == 400 and body["error"]["metadata"]["field"] == "amount"
    resp = await env.client.get("/api/v1/credits/summary", headers=bearer(env.key))
    assert resp.status == 403
