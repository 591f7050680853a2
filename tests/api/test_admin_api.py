"""The operator's admin API through HTTP against a real Redis."""

import hashlib

from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from tests.support import ThreadedServer, account_state, admin_headers, make_settings, new_account


async def test_admin_api_is_off_without_a_token(redis_url: str, provider: ThreadedServer) -> None:
    app = create_app(make_settings(redis_url, provider.url, admin_token=None))
    async with TestClient(TestServer(app)) as c:
        resp = await c.post("/admin/v1/accounts", json={"name": "x"})
        assert resp.status == 403
        body = await resp.json()
        assert body["error"]["metadata"]["error_type"] == "forbidden"
        assert "GATEWAY_ADMIN_TOKEN" in body["error"]["message"]


async def test_wrong_admin_token_is_refused(client: TestClient) -> None:
    resp = await client.post(
        "/admin/v1/accounts", json={"name": "x"}, headers={"Authorization": "Bearer nope"}
    )
    assert resp.status == 401
    resp = await client.post("/admin/v1/accounts", json={"name": "x"})
    assert resp.status == 401


async def test_account_starts_with_its_grant(client: TestClient) -> None:
    account_id, _ = await new_account(client, grant="0.50")
    state = await account_state(client, account_id)
    assert state["balance"] == "0.50"
    assert state["reserved"] == "0.00"
    assert state["lifetime_purchases"] == "0.00"
    assert state["tier"] == "basic"


async def test_purchase_credits_amount_not_fee_and_is_idempotent(client: TestClient) -> None:
    account_id, _ = await new_account(client)
    body = {"amount": "10.00", "method": "card", "idempotency_key": "order-1"}
    url = f"/admin/v1/accounts/{account_id}/purchases"
    first = await client.post(url, json=body, headers=admin_headers())
    assert first.status == 201
    purchase = await first.json()
    assert purchase["amount"] == "10.00"
    assert purchase["fee"] == "0.80"
    assert purchase["total_charged"] == "10.80"
    again = await client.post(url, json=body, headers=admin_headers())
    assert again.status == 200
    assert (await again.json())["id"] == purchase["id"]
    state = await account_state(client, account_id)
    assert state["balance"] == "10.00"
    assert state["lifetime_purchases"] == "10.00"
    assert state["tier"] == "plus"


async def test_same_idempotency_key_with_another_body_is_a_conflict(client: TestClient) -> None:
    account_id, _ = await new_account(client)
    url = f"/admin/v1/accounts/{account_id}/purchases"
    ok = await client.post(
        url,
        json={"amount": "5.00", "method": "card", "idempotency_key": "k"},
        headers=admin_headers(),
    )
    assert ok.status == 201
    clash = await client.post(
        url,
        json={"amount": "6.00", "method": "card", "idempotency_key": "k"},
        headers=admin_headers(),
    )
    assert clash.status == 409
    assert (await clash.json())["error"]["metadata"]["error_type"] == "idempotency_conflict"
    assert (await account_state(client, account_id))["balance"] == "5.00"


async def test_crypto_fee_is_five_percent(client: TestClient) -> None:
    account_id, _ = await new_account(client)
    resp = await client.post(
        f"/admin/v1/accounts/{account_id}/purchases",
        json={"amount": "100.00", "method": "crypto", "idempotency_key": "c1"},
        headers=admin_headers(),
    )
    assert (await resp.json())["fee"] == "5.00"


async def test_bad_purchase_input_names_the_field_and_changes_nothing(client: TestClient) -> None:
    account_id, _ = await new_account(client)
    url = f"/admin/v1/accounts/{account_id}/purchases"
    cases = [
        ({"amount": "10.001", "method": "card", "idempotency_key": "a"}, "amount"),
        ({"amount": 10.0, "method": "card", "idempotency_key": "a"}, "amount"),
        ({"amount": "-5", "method": "card", "idempotency_key": "a"}, "amount"),
        ({"amount": "5.00", "method": "cash", "idempotency_key": "a"}, "method"),
        ({"amount": "5.00", "method": "card"}, "idempotency_key"),
        ({"amount": "1e3", "method": "card", "idempotency_key": "a"}, "amount"),
    ]
    for body, field in cases:
        resp = await client.post(url, json=body, headers=admin_headers())
        assert resp.status == 400, body
        assert (await resp.json())["error"]["metadata"]["field"] == field
    resp = await client.post(url, data=b"{nope", headers=admin_headers())
    assert resp.status == 400
    assert (await account_state(client, account_id))["balance"] == "0.00"


async def test_unknown_account_is_404(client: TestClient) -> None:
    resp = await client.get("/admin/v1/accounts/doesnotexist", headers=admin_headers())
    assert resp.status == 404
    resp = await client.post(
        "/admin/v1/accounts/doesnotexist/purchases",
        json={"amount": "1.00", "method": "card", "idempotency_key": "x"},
        headers=admin_headers(),
    )
    assert resp.status == 404


async def test_key_secret_shown_once_and_only_hash_kept(client: TestClient) -> None:
    account_id, secret = await new_account(client)
    resp = await client.post(
        f"/admin/v1/accounts/{account_id}/keys", json={"name": "second"}, headers=admin_headers()
    )
    created = await resp.json()
    assert created["key"].startswith("sk-gw-v1-") and created["key"] != secret
    assert created["hash"] == hashlib.sha256(created["key"].encode()).hexdigest()
    patched = await client.patch(
        f"/admin/v1/keys/{created['hash']}", json={"disabled": True}, headers=admin_headers()
    )
    assert "key" not in await patched.json()


async def test_disabled_key_is_refused_at_once(client: TestClient) -> None:
    _, secret = await new_account(client, purchase="1.00")

    key_hash = hashlib.sha256(secret.encode()).hexdigest()
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await client.get("/api/v1/credits", headers=headers)).status == 200
    resp = await client.patch(
        f"/admin/v1/keys/{key_hash}", json={"disabled": True}, headers=admin_headers()
    )
    assert resp.status == 200 and (await resp.json())["disabled"] is True
    for call in (
        client.get("/api/v1/credits", headers=headers),
        client.post(
            "/api/v1/chat/completions",
            headers=headers,
            json={"model": "test/paid", "messages": [{"role": "user", "content": "hi"}]},
        ),
    ):
        resp = await call
        assert resp.status == 401
        assert (await resp.json())["error"]["message"] == "this API key is disabled"
