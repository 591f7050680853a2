"""The authorization matrix: every endpoint against every kind of credential. No account can read
or change another's data; each kind of key reaches exactly what it should."""

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.clock import ManualClock
from gateway.state import CLOCK
from tests.support import ADMIN_TOKEN, ThreadedServer, admin_headers, bearer, chat, make_settings

START = 1_795_780_800.0


@dataclass
class World:
    client: TestClient
    account: str
    other_account: str
    keys: dict[str, str]  # credential name -> bearer secret
    own_key_hash: str
    other_key_hash: str
    own_generation: str
    own_purchase: str


@pytest.fixture
async def world(redis_url: str, provider: ThreadedServer) -> AsyncIterator[World]:
    app = create_app(make_settings(redis_url, provider.url), clock=ManualClock(START))
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:

        async def account() -> str:
            resp = await c.post("/admin/v1/accounts", json={"name": "m"}, headers=admin_headers())
            account_id: str = (await resp.json())["id"]
            await c.post(
                f"/admin/v1/accounts/{account_id}/purchases",
                json={"amount": "5.00", "method": "card", "idempotency_key": "a"},
                headers=admin_headers(),
            )
            return account_id

        async def key(account_id: str, **body: object) -> str:
            resp = await c.post(
                f"/admin/v1/accounts/{account_id}/keys",
                json={"name": "k", **body},
                headers=admin_headers(),
            )
            secret: str = (await resp.json())["key"]
            return secret

        mine, theirs = await account(), await account()
        ordinary = await key(mine)
        disabled = await key(mine)
        expiring = await key(mine, expires_at="2026-11-27T12:30:00Z")
        management = await key(mine, management=True)
        other = await key(theirs)
        await c.patch(
            f"/admin/v1/keys/{hashlib.sha256(disabled.encode()).hexdigest()}",
            json={"disabled": True},
            headers=admin_headers(),
        )
        resp = await c.post(
            "/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(ordinary)
        )
        generation = resp.headers["X-Generation-Id"]
        purchases = await c.post(
            f"/admin/v1/accounts/{mine}/purchases",
            json={"amount": "1.00", "method": "card", "idempotency_key": "b"},
            headers=admin_headers(),
        )
        clock = c.app[CLOCK]
        assert isinstance(clock, ManualClock)
        clock.advance(3600)  # the expiring key is now expired
        yield World(
            client=c,
            account=mine,
            other_account=theirs,
            keys={
                "none": "",
                "wrong": "sk-gw-v1-wrong",
                "other": other,
                "disabled": disabled,
                "expired": expiring,
                "management": management,
                "ordinary": ordinary,
                "admin": ADMIN_TOKEN,
            },
            own_key_hash=hashlib.sha256(ordinary.encode()).hexdigest(),
            other_key_hash=hashlib.sha256(other.encode()).hexdigest(),
            own_generation=generation,
            own_purchase=(await purchases.json())["id"],
        )


# Expected status per credential: none, wrong, other, disabled, expired, management, ordinary,
# admin. ("other" is a valid key of another account: its own data only.)
CREDENTIALS = ("none", "wrong", "other", "disabled", "expired", "management", "ordinary", "admin")


def _cases(w: World) -> list[tuple[str, str, object, tuple[int, ...]]]:
    gen = w.own_generation
    return [
        (
            "POST",
            "/api/v1/chat/completions",
            chat("test/paid"),
            (401, 401, 200, 401, 401, 403, 200, 401),
        ),
        ("GET", "/api/v1/credits", None, (401, 401, 200, 401, 401, 200, 200, 401)),
        ("GET", "/api/v1/key", None, (401, 401, 200, 401, 401, 200, 200, 401)),
        ("GET", f"/api/v1/generation?id={gen}", None, (401, 401, 404, 401, 401, 200, 200, 401)),
        ("GET", "/api/v1/activity", None, (401, 401, 200, 401, 401, 200, 200, 401)),
        ("GET", "/api/v1/generations", None, (401, 401, 200, 401, 401, 200, 200, 401)),
        ("GET", "/api/v1/keys", None, (401, 401, 403, 401, 401, 200, 403, 401)),
        ("GET", f"/api/v1/keys/{w.own_key_hash}", None, (401, 401, 403, 401, 401, 200, 403, 401)),
        (
            "DELETE",
            f"/api/v1/keys/{w.other_key_hash}",
            None,
            (401, 401, 403, 401, 401, 404, 403, 401),
        ),
        ("GET", f"/admin/v1/accounts/{w.account}", None, (401,) * 7 + (200,)),
        ("GET", f"/admin/v1/accounts/{w.account}/ledger", None, (401,) * 7 + (200,)),
        ("POST", f"/admin/v1/purchases/{w.own_purchase}/refund", None, (401,) * 7 + (200,)),
        ("GET", f"/admin/v1/activity?account={w.account}", None, (401,) * 7 + (200,)),
    ]


async def test_every_endpoint_against_every_credential(world: World) -> None:
    c = world.client
    failures = []
    for method, path, body, expected in _cases(world):
        for credential, status in zip(CREDENTIALS, expected, strict=True):
            secret = world.keys[credential]
            headers = bearer(secret) if secret else {}
            resp = await c.request(method, path, json=body, headers=headers)
            if resp.status != status:
                failures.append(f"{method} {path} as {credential}: {resp.status}, not {status}")
    assert not failures, "\n".join(failures)


async def test_another_accounts_data_stays_out_of_reach(world: World) -> None:
    c = world.client
    other = world.keys["other"]
    data = (await (await c.get("/api/v1/generations", headers=bearer(other))).json())["data"]
    assert all(g["id"] != world.own_generation for g in data)
    patch = await c.patch(
        f"/api/v1/keys/{world.own_key_hash}", json={"disabled": True}, headers=bearer(other)
    )
    assert patch.status == 403
    still = await c.get("/api/v1/credits", headers=bearer(world.keys["ordinary"]))
    assert still.status == 200
