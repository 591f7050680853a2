"""Management keys manage their own account's keys and nothing else; keys may expire."""

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.clock import ManualClock
from gateway.state import CLOCK
from tests.api.credits_support import management_key
from tests.support import ThreadedServer, admin_headers, bearer, chat, make_settings, new_account

START = 1_795_780_800.0  # 2026-11-27 12:00 UTC


@pytest.fixture
async def mc(redis_url: str, provider: ThreadedServer) -> AsyncIterator[TestClient]:
    app = create_app(make_settings(redis_url, provider.url), clock=ManualClock(START))
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def test_a_management_key_manages_its_accounts_keys(mc: TestClient) -> None:
    account_id, ordinary = await new_account(mc, purchase="1.00")
    manager = await management_key(mc, account_id)
    created = await mc.post(
        "/api/v1/keys",
        json={"name": "ci", "limit": "2.50", "limit_reset": "monthly"},
        headers=bearer(manager),
    )
    assert created.status == 201
    body = await created.json()
    secret, key_hash = body["key"], body["data"]["hash"]
    assert body["data"]["limit"] == "2.50" and body["data"]["limit_reset"] == "monthly"
    listed = await (await mc.get("/api/v1/keys", headers=bearer(manager))).json()
    assert listed["total"] == 3 and all("key" not in k for k in listed["data"])
    page = await (await mc.get("/api/v1/keys?offset=2&limit=1", headers=bearer(manager))).json()
    assert [k["hash"] for k in page["data"]] == [key_hash]
    resp = await mc.post("/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(secret))
    assert resp.status == 200  # the new key works
    patched = await mc.patch(
        f"/api/v1/keys/{key_hash}", json={"name": "ci-2", "disabled": True}, headers=bearer(manager)
    )
    assert (await patched.json())["data"]["name"] == "ci-2"
    resp = await mc.post("/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(secret))
    assert resp.status == 401
    deleted = await mc.delete(f"/api/v1/keys/{key_hash}", headers=bearer(manager))
    assert deleted.status == 200
    assert (await mc.get(f"/api/v1/keys/{key_hash}", headers=bearer(manager))).status == 404
    assert (await mc.get("/api/v1/credits", headers=bearer(secret))).status == 401
    assert (await mc.get("/api/v1/credits", headers=bearer(manager))).status == 200
    assert (await mc.get("/api/v1/keys", headers=bearer(ordinary))).status == 403


async def test_a_management_key_cannot_call_models_or_reach_other_accounts(
    mc: TestClient,
) -> None:
    account_id, _ = await new_account(mc, purchase="1.00")
    manager = await management_key(mc, account_id)
    resp = await mc.post(
        "/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(manager)
    )
    assert resp.status == 403
    other_account, _ = await new_account(mc)
    other = await mc.post(
        f"/admin/v1/accounts/{other_account}/keys", json={"name": "x"}, headers=admin_headers()
    )
    other_hash = (await other.json())["hash"]
    for method in ("GET", "PATCH", "DELETE"):
        resp = await mc.request(
            method, f"/api/v1/keys/{other_hash}", json={}, headers=bearer(manager)
        )
        assert resp.status == 404, method
    resp = await mc.post(
        "/api/v1/keys", json={"name": "m", "management": True}, headers=bearer(manager)
    )
    assert resp.status == 403


async def test_keys_expire(mc: TestClient) -> None:
    account_id, _ = await new_account(mc, purchase="1.00")
    resp = await mc.post(
        f"/admin/v1/accounts/{account_id}/keys",
        json={"name": "short", "expires_at": "2026-11-27T13:00:00Z"},
        headers=admin_headers(),
    )
    assert resp.status == 201
    body = await resp.json()
    assert body["expires_at"] == "2026-11-27T13:00:00.000Z"
    key = body["key"]
    ok = await mc.post("/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key))
    assert ok.status == 200
    clock = mc.app[CLOCK]
    assert isinstance(clock, ManualClock)
    clock.advance(3600)
    late = await mc.post("/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key))
    assert late.status == 401
    assert (await late.json())["error"]["message"] == "this API key has expired"
    for bad in ("2020-01-01T00:00:00Z", "tomorrow", "2027-01-01T00:00:00", 5):
        resp = await mc.post(
            f"/admin/v1/accounts/{account_id}/keys",
            json={"name": "x", "expires_at": bad},
            headers=admin_headers(),
        )
        assert resp.status == 400
        assert (await resp.json())["error"]["metadata"]["field"] == "expires_at"


async def test_key_changes_are_checked(mc: TestClient) -> None:
    account_id, _ = await new_account(mc)
    manager = await management_key(mc, account_id)
    created = await mc.post("/api/v1/keys", json={"name": "k"}, headers=bearer(manager))
    key_hash = (await created.json())["data"]["hash"]
    url = f"/api/v1/keys/{key_hash}"
    bad = await mc.patch(url, json={"management": True}, headers=bearer(manager))
    assert bad.status == 400 and (await bad.json())["error"]["metadata"]["field"] == "management"
    ok = await mc.patch(url, json={"expires_at": "2027-01-01T00:00:00Z"}, headers=bearer(manager))
    assert (await ok.json())["data"]["expires_at"] == "2027-01-01T00:00:00.000Z"
    far = await mc.post(
        "/api/v1/keys",
        json={"name": "f", "expires_at": "9999-12-31T23:59:59-23:59"},
        headers=bearer(manager),
    )
    assert far.status == 400
    huge = await mc.get("/api/v1/keys?offset=99999999999999999999999", headers=bearer(manager))
    assert huge.status == 200 and (await huge.json())["data"] == []
    assert (await mc.get("/api/v1/keys", headers=bearer(manager))).status == 200
