"""The ledger through HTTP: entries that sum to the balance, refunds within 24 hours of unused
credits (oldest used first), expiry after a year, against a real Redis with a moved clock."""

import hashlib
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.clock import ManualClock
from gateway.state import SERVICES
from gateway.tasks.expiry import sweep_once
from tests.support import (
    ThreadedServer,
    account_state,
    admin_headers,
    bearer,
    chat,
    make_settings,
    new_account,
)

START = 1_795_780_800.0  # 2026-11-27 12:00 UTC
DAY = 86_400.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def ledger_client(
    redis_url: str, provider: ThreadedServer, clock: ManualClock
) -> AsyncIterator[TestClient]:
    app = create_app(make_settings(redis_url, provider.url), clock=clock)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def _buy(c: TestClient, account_id: str, amount: str, key: str, method: str = "card") -> str:
    resp = await c.post(
        f"/admin/v1/accounts/{account_id}/purchases",
        json={"amount": amount, "method": method, "idempotency_key": key},
        headers=admin_headers(),
    )
    assert resp.status in (200, 201), await resp.text()
    purchase_id: str = (await resp.json())["id"]
    return purchase_id


async def _ledger(c: TestClient, account_id: str, limit: int = 100) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        url = f"/admin/v1/accounts/{account_id}/ledger?limit={limit}"
        resp = await c.get(url + (f"&cursor={cursor}" if cursor else ""), headers=admin_headers())
        assert resp.status == 200
        page = await resp.json()
        entries += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return entries
    raise AssertionError("ledger paging did not end")


async def _spend(c: TestClient, key: str, n: int) -> Decimal:
    spent = Decimal(0)
    for _ in range(n):
        resp = await c.post("/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key))
        assert resp.status == 200
        spent += Decimal(str((await resp.json())["usage"]["cost"]))
    return spent


async def test_ledger_sums_to_the_balance_and_pages(
    ledger_client: TestClient, clock: ManualClock
) -> None:
    c = ledger_client
    account_id, key = await new_account(c, grant="0.50")
    await _buy(c, account_id, "10.00", "a")
    await _spend(c, key, 3)
    clock.advance(DAY)
    await _buy(c, account_id, "5.00", "b")
    await _spend(c, key, 2)
    entries = await _ledger(c, account_id, limit=2)
    kinds = [e["kind"] for e in entries]
    assert kinds == ["usage", "purchase", "usage", "purchase", "grant"]  # newest first
    total = sum(Decimal(e["amount"]) for e in entries)
    state = await account_state(c, account_id)
    assert total == Decimal(state["balance"])
    times = [e["created_at"] for e in entries]
    assert times == sorted(times, reverse=True)


async def test_refund_takes_back_only_the_unused_part_and_never_the_fee(
    ledger_client: TestClient, clock: ManualClock
) -> None:
    c = ledger_client
    account_id, key = await new_account(c)
    old = await _buy(c, account_id, "1.00", "old")
    new = await _buy(c, account_id, "10.00", "new")
    # The provider bills 10,006 prompt tokens a request: $0.03003 for 20, from the older purchase.
    spent = Decimal(0)
    for _ in range(20):
        r = await c.post(
            "/api/v1/chat/completions", json=chat("test/overuse", max_tokens=1), headers=bearer(key)
        )
        spent += Decimal(str((await r.json())["usage"]["cost"]))
    assert spent == Decimal("0.03003")  # 20 x (10,006 x $0.00000015 + 1 x $0.0000006)
    clock.advance(3600)
    refused = await c.post(f"/admin/v1/purchases/{old}/refund", headers=admin_headers())
    assert refused.status == 200  # $1 - $0.03003 of the older purchase is still unused
    assert (await refused.json())["refunded"] == "0.96997"
    refund = await c.post(f"/admin/v1/purchases/{new}/refund", headers=admin_headers())
    assert refund.status == 200
    body = await refund.json()
    assert body["refunded"] == "10.00" and body["fee_refunded"] == "0.00"
    assert body["fee_kept"] == "0.80"
    again = await c.post(f"/admin/v1/purchases/{new}/refund", headers=admin_headers())
    assert again.status == 200 and await again.json() == body  # idempotent
    state = await account_state(c, account_id)
    assert state["balance"] == "0.00"
    assert state["lifetime_purchases"] == "0.03003"  # purchases less refunds
    assert state["refunded"] == "10.96997"
    total = sum(Decimal(e["amount"]) for e in await _ledger(c, account_id))
    assert total == 0


async def test_refund_rules(ledger_client: TestClient, clock: ManualClock) -> None:
    c = ledger_client
    account_id, _ = await new_account(c)
    crypto = await _buy(c, account_id, "5.00", "c", method="crypto")
    card = await _buy(c, account_id, "5.00", "d")
    resp = await c.post(f"/admin/v1/purchases/{crypto}/refund", headers=admin_headers())
    assert resp.status == 409
    assert (await resp.json())["error"]["metadata"]["reason"] == "crypto"
    clock.advance(DAY)
    late = await c.post(f"/admin/v1/purchases/{card}/refund", headers=admin_headers())
    assert late.status == 409
    refusal = (await late.json())["error"]
    assert refusal["metadata"]["reason"] == "too_old"
    assert "within 24 hours of the purchase" in refusal["message"]
    for bad in ("pur-zzz-123", "nope", f"pur-{account_id}-00ff"):
        resp = await c.post(f"/admin/v1/purchases/{bad}/refund", headers=admin_headers())
        assert resp.status == 404
    assert (await account_state(c, account_id))["balance"] == "10.00"


async def test_refund_lowers_the_free_tier(ledger_client: TestClient) -> None:
    c = ledger_client
    account_id, key = await new_account(c)
    purchase = await _buy(c, account_id, "10.00", "t")
    assert (await account_state(c, account_id))["tier"] == "plus"
    await c.post(f"/admin/v1/purchases/{purchase}/refund", headers=admin_headers())
    assert (await account_state(c, account_id))["tier"] == "basic"
    data = (await (await c.get("/api/v1/key", headers=bearer(key))).json())["data"]
    assert data["free_model_daily_requests"]["limit"] == 50


async def test_unused_credits_expire_after_a_year_oldest_first(
    ledger_client: TestClient, clock: ManualClock
) -> None:
    c = ledger_client
    ledger = c.app[SERVICES].ledger
    year = 365 * DAY
    account_id, key = await new_account(c, grant="0.25")
    await _buy(c, account_id, "1.00", "y1")
    clock.advance(200 * DAY)
    await _buy(c, account_id, "2.00", "y2")
    spent = await _spend(c, key, 3)  # oldest first: taken from the grant
    clock.advance(170 * DAY)  # the first purchase is now 370 days old, the second 170
    assert await ledger.expire(account_id, clock.now(), year) == 1_000_000_000
    state = await account_state(c, account_id)
    assert Decimal(state["balance"]) == Decimal("2.25") - spent
    assert state["expired"] == "1.00"
    assert await ledger.expire(account_id, clock.now(), year) == 0  # nothing expires twice
    credits = (await (await c.get("/api/v1/credits", headers=bearer(key))).json())["data"]
    assert Decimal(str(credits["total_credits"])) == Decimal("2.25")
    entries = await _ledger(c, account_id)
    assert [e["kind"] for e in entries].count("expiry") == 1
    assert sum(Decimal(e["amount"]) for e in entries) == Decimal(state["balance"])
    clock.advance(200 * DAY)  # now the second purchase is past a year too; the grant never
    assert await ledger.expire(account_id, clock.now(), year) == 2_000_000_000
    assert Decimal((await account_state(c, account_id))["balance"]) == Decimal("0.25") - spent


async def test_used_credits_do_not_expire(ledger_client: TestClient, clock: ManualClock) -> None:
    c = ledger_client
    account_id, key = await new_account(c)
    await _buy(c, account_id, "1.00", "u1")
    spent = await _spend(c, key, 2)
    await _buy(c, account_id, "1.00", "u2")
    clock.advance(366 * DAY)
    # Both are past a year; the first was partly used, so only its unused rest expires, and all
    # of the second.
    assert await c.app[SERVICES].ledger.expire(account_id, clock.now(), 365 * DAY) == int(
        (Decimal("2.00") - spent) * 10**9
    )
    assert (await account_state(c, account_id))["balance"] == "0.00"


async def test_one_sweep_at_a_time(ledger_client: TestClient) -> None:
    first = await sweep_once(ledger_client.app)
    second = await sweep_once(ledger_client.app)
    assert first is not None and second is None  # the lease keeps a second pass out


async def _key_with_limit(
    c: TestClient, account_id: str, limit: str, reset: str
) -> tuple[str, str]:
    resp = await c.post(
        f"/admin/v1/accounts/{account_id}/keys",
        json={"name": "limited", "limit": limit, "limit_reset": reset},
        headers=admin_headers(),
    )
    assert resp.status == 201
    body = await resp.json()
    return body["key"], body["hash"]


async def test_a_key_limit_is_enforced_per_period_and_survives_raising(
    ledger_client: TestClient, clock: ManualClock
) -> None:
    c = ledger_client
    account_id, _ = await new_account(c, purchase="5.00")
    key, key_hash = await _key_with_limit(c, account_id, "0.0001", "daily")
    # The worst case at the model's cap (1000 tokens x $0.0000006) is over the key's $0.0001.
    big = await c.post("/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key))
    assert big.status == 402
    meta = (await big.json())["error"]["metadata"]
    assert meta["reason"] == "key_limit" and meta["limit_remaining"] == "0.0001"
    statuses = []
    for _ in range(12):
        resp = await c.post(
            "/api/v1/chat/completions", json=chat("test/paid", max_tokens=100), headers=bearer(key)
        )
        statuses.append(resp.status)
    # Each costs $0.0000105 and reserves about $0.0000675: some fit, then none does.
    fitted = statuses.count(200)
    assert fitted >= 1 and statuses == [200] * fitted + [402] * (12 - fitted)
    used = fitted * Decimal("0.0000105")
    data = (await (await c.get("/api/v1/key", headers=bearer(key))).json())["data"]
    assert data["limit"] == 0.0001 and data["limit_reset"] == "daily"
    assert Decimal(str(data["usage_daily"])) == used
    assert Decimal(str(data["limit_remaining"])) == Decimal("0.0001") - used
    raised = await c.patch(
        f"/admin/v1/keys/{key_hash}", json={"limit": "0.0002"}, headers=admin_headers()
    )
    assert raised.status == 200
    data = (await (await c.get("/api/v1/key", headers=bearer(key))).json())["data"]
    assert Decimal(str(data["usage_daily"])) == used  # raising a limit keeps its usage
    clock.advance(DAY)  # a new UTC day: the daily limit starts again
    resp = await c.post(
        "/api/v1/chat/completions", json=chat("test/paid", max_tokens=100), headers=bearer(key)
    )
    assert resp.status == 200
    data = (await (await c.get("/api/v1/key", headers=bearer(key))).json())["data"]
    assert Decimal(str(data["usage_daily"])) == Decimal("0.0000105")
    assert Decimal(str(data["usage"])) == used + Decimal("0.0000105")


async def test_weekly_limits_reset_on_monday(ledger_client: TestClient, clock: ManualClock) -> None:
    c = ledger_client
    account_id, _ = await new_account(c, purchase="5.00")
    key, _ = await _key_with_limit(c, account_id, "0.00007", "weekly")
    ok = await c.post(
        "/api/v1/chat/completions", json=chat("test/paid", max_tokens=100), headers=bearer(key)
    )
    assert ok.status == 200
    refused = await c.post(
        "/api/v1/chat/completions", json=chat("test/paid", max_tokens=100), headers=bearer(key)
    )
    assert refused.status == 402
    clock.set(1_795_996_800.0 - 1)  # Sunday 2026-11-29 23:59:59 UTC: the same week
    again = await c.post(
        "/api/v1/chat/completions", json=chat("test/paid", max_tokens=100), headers=bearer(key)
    )
    assert again.status == 402
    clock.set(1_795_996_800.0)  # Monday 2026-11-30 00:00 UTC
    monday = await c.post(
        "/api/v1/chat/completions", json=chat("test/paid", max_tokens=100), headers=bearer(key)
    )
    assert monday.status == 200


async def test_large_refunds_stay_exact(ledger_client: TestClient) -> None:
    c = ledger_client
    account_id, _ = await new_account(c)
    purchase = await _buy(c, account_id, "99999.99", "big")
    resp = await c.post(f"/admin/v1/purchases/{purchase}/refund", headers=admin_headers())
    body = await resp.json()
    assert body["refunded"] == "99999.99" and body["fee_kept"] == "5500.00"
    assert (await account_state(c, account_id))["balance"] == "0.00"


async def test_refunds_and_expiry_wait_for_held_credits_and_free_orphaned_ones(
    ledger_client: TestClient, clock: ManualClock
) -> None:
    c = ledger_client
    metering = c.app[SERVICES].metering
    account_id, key = await new_account(c)
    purchase = await _buy(c, account_id, "1.00", "held")
    key_hash = hashlib.sha256(key.encode()).hexdigest()
    # A request in flight holds $0.90 of it (its gateway then dies: never settled).
    admitted = await metering.admit(
        account_id, key_hash, f"gen-{account_id}-aa", 900_000_000, paid=True, now=clock.now()
    )
    assert admitted.admitted
    held = await c.post(f"/admin/v1/purchases/{purchase}/refund", headers=admin_headers())
    assert held.status == 409
    assert (await held.json())["error"]["metadata"]["reason"] == "in_flight"
    clock.advance(3600)  # past the reservation timeout: the orphaned hold is released
    freed = await c.post(f"/admin/v1/purchases/{purchase}/refund", headers=admin_headers())
    assert freed.status == 200 and (await freed.json())["refunded"] == "1.00"
    state = await account_state(c, account_id)
    assert state["reserved"] == "0.00" and state["balance"] == "0.00"


async def test_a_late_refund_names_the_window_in_force(
    redis_url: str, provider: ThreadedServer, clock: ManualClock
) -> None:
    settings = make_settings(redis_url, provider.url, refund_window_hours=0.002)
    async with TestClient(TestServer(create_app(settings, clock=clock), host="127.0.0.1")) as c:
        account_id, _ = await new_account(c)
        purchase = await _buy(c, account_id, "5.00", "w")
        clock.advance(8)  # 0.002 hours is 7.2 seconds
        late = await c.post(f"/admin/v1/purchases/{purchase}/refund", headers=admin_headers())
        refusal = (await late.json())["error"]
        assert late.status == 409 and refusal["metadata"]["reason"] == "too_old"
        assert (
            refusal["message"] == "purchases are refundable only within 7.2 seconds of the purchase"
        )
        assert refusal["metadata"]["refund_window_hours"] == 0.002
