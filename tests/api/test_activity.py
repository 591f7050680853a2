"""The Activity API from rollups and records: buckets, groups, filters, totals that agree with
the credits API, generations paging, and CSV that matches the JSON."""

import asyncio
import csv
import hashlib
import io
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.clock import ManualClock
from gateway.redis_clients import store_client
from gateway.state import CLOCK
from metering.layout import AccountKeys
from metering.rollups import bucket_start
from tests.support import ThreadedServer, admin_headers, bearer, chat, make_settings, new_account

DAY0 = 1_795_737_600.0  # 2026-11-27 00:00 UTC


@pytest.fixture
async def ac(redis_url: str, provider: ThreadedServer) -> AsyncIterator[TestClient]:
    app = create_app(make_settings(redis_url, provider.url), clock=ManualClock(DAY0 + 3600))
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def _use(c: TestClient, key: str, model: str, n: int) -> Decimal:
    spent = Decimal(0)
    for _ in range(n):
        resp = await c.post("/api/v1/chat/completions", json=chat(model), headers=bearer(key))
        assert resp.status == 200
        spent += Decimal(str((await resp.json())["usage"]["cost"]))
    return spent


async def _seed(c: TestClient) -> tuple[str, str, Decimal, Decimal]:
    account_id, key = await new_account(c, purchase="5.00")
    clock = c.app[CLOCK]
    assert isinstance(clock, ManualClock)
    first = await _use(c, key, "test/paid", 3)
    await _use(c, key, "test/free:free", 2)
    clock.advance(86_400)  # the next day
    second = await _use(c, key, "test/fallback", 4)
    return account_id, key, first, second


async def test_daily_buckets_grouped_and_filtered(ac: TestClient) -> None:
    _, key, first, second = await _seed(ac)
    q = "from=2026-11-27T00:00:00Z&to=2026-11-29T00:00:00Z&granularity=day"
    data = (await (await ac.get(f"/api/v1/activity?{q}", headers=bearer(key))).json())["data"]
    assert [b["start"] for b in data["buckets"]] == [
        "2026-11-27T00:00:00.000Z",
        "2026-11-28T00:00:00.000Z",
    ]
    assert [b["requests"] for b in data["buckets"]] == [5, 4]
    assert Decimal(data["buckets"][0]["spend"]) == first
    assert Decimal(data["totals"]["spend"]) == first + second
    assert (
        data["totals"]["prompt_tokens"] == 9 * 6 and data["totals"]["completion_tokens"] == 9 * 16
    )
    credits = (await (await ac.get("/api/v1/credits", headers=bearer(key))).json())["data"]
    assert Decimal(str(credits["total_usage"])) == Decimal(data["totals"]["spend"])
    grouped = (
        await (await ac.get(f"/api/v1/activity?{q}&group_by=model", headers=bearer(key))).json()
    )["data"]
    assert {(b["start"][:10], b["model"], b["requests"]) for b in grouped["buckets"]} == {
        ("2026-11-27", "test/paid", 3),
        ("2026-11-27", "test/free:free", 2),
        ("2026-11-28", "test/fallback", 4),
    }
    only = (
        await (await ac.get(f"/api/v1/activity?{q}&model=test/paid", headers=bearer(key))).json()
    )["data"]
    assert only["totals"]["requests"] == 3 and Decimal(only["totals"]["spend"]) == first
    hourly = await (
        await ac.get(
            "/api/v1/activity?granularity=hour&from=2026-11-27T00:00:00Z&to=2026-11-27T03:00:00Z",
            headers=bearer(key),
        )
    ).json()
    assert [b["requests"] for b in hourly["data"]["buckets"]] == [0, 5, 0]


async def test_generations_page_newest_first_with_filters(ac: TestClient) -> None:
    _, key, _, _ = await _seed(ac)
    q = "from=2026-11-27T00:00:00Z&to=2026-11-29T00:00:00Z"
    seen: list[dict[str, object]] = []
    cursor = None
    for _ in range(10):
        url = f"/api/v1/generations?{q}&limit=4" + (f"&cursor={cursor}" if cursor else "")
        page = await (await ac.get(url, headers=bearer(key))).json()
        seen += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 9
    assert [g["model"] for g in seen[:4]] == ["test/fallback"] * 4  # newest first
    times = [g["created_at"] for g in seen]
    assert times == sorted(times, reverse=True)
    key_hash = hashlib.sha256(key.encode()).hexdigest()
    free = await (
        await ac.get(
            f"/api/v1/generations?{q}&model=test/free:free&key={key_hash}", headers=bearer(key)
        )
    ).json()
    assert [g["model"] for g in free["data"]] == ["test/free:free"] * 2
    bad = await ac.get("/api/v1/generations?cursor=nope", headers=bearer(key))
    assert bad.status == 400


async def test_csv_matches_the_api(ac: TestClient) -> None:
    account_id, key, _, _ = await _seed(ac)
    q = "from=2026-11-27T00:00:00Z&to=2026-11-29T00:00:00Z&group_by=provider"
    api = (await (await ac.get(f"/api/v1/activity?{q}", headers=bearer(key))).json())["data"]
    resp = await ac.get(f"/api/v1/activity.csv?{q}", headers=bearer(key))
    assert resp.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [r["provider"] for r in rows] == [b["provider"] for b in api["buckets"]]
    assert [r["spend"] for r in rows] == [b["spend"] for b in api["buckets"]]
    gens = await ac.get(f"/api/v1/generations.csv?{q}", headers=bearer(key))
    records = list(csv.DictReader(io.StringIO(await gens.text())))
    assert len(records) == 9 and records[0]["model"] == "test/fallback"
    assert sum(Decimal(r["total_cost_usd"]) for r in records) == Decimal(api["totals"]["spend"])
    admin = await ac.get(f"/admin/v1/activity?account={account_id}&{q}", headers=admin_headers())
    assert (await admin.json())["data"]["totals"] == api["totals"]


async def test_bad_activity_queries_are_400s(ac: TestClient) -> None:
    _, key = await new_account(ac)
    for q in (
        "granularity=week",
        "group_by=color",
        "from=yesterday",
        "from=2026-11-27T00:00:00",
        "granularity=minute&from=2025-01-01T00:00:00Z",
        "from=2026-11-28T00:00:00Z&to=2026-11-27T00:00:00Z",
    ):
        resp = await ac.get(f"/api/v1/activity?{q}", headers=bearer(key))
        assert resp.status == 400, q
    assert (await ac.get("/api/v1/activity")).status == 401


async def test_operator_activity_across_accounts(ac: TestClient) -> None:
    first, key_a = await new_account(ac, purchase="1.00")
    second, key_b = await new_account(ac, purchase="1.00")
    spent_a = await _use(ac, key_a, "test/paid", 2)
    spent_b = await _use(ac, key_b, "test/paid", 3)
    q = "from=2026-11-27T00:00:00Z&to=2026-11-28T00:00:00Z&group_by=account"
    data = (await (await ac.get(f"/admin/v1/activity?{q}", headers=admin_headers())).json())["data"]
    rows = {b["account"]: b for b in data["buckets"]}
    assert Decimal(rows[first]["spend"]) == spent_a and rows[first]["requests"] == 2
    assert Decimal(rows[second]["spend"]) == spent_b and rows[second]["requests"] == 3
    one = await (
        await ac.get(
            f"/admin/v1/activity?account={second}&from=2026-11-27T00:00:00Z"
            "&to=2026-11-28T00:00:00Z",
            headers=admin_headers(),
        )
    ).json()
    assert Decimal(one["data"]["totals"]["spend"]) == spent_b
    missing = await ac.get("/admin/v1/activity?account=nobody", headers=admin_headers())
    assert missing.status == 404


async def test_the_rollups_are_counted_without_a_read(ac: TestClient, redis_url: str) -> None:
    """The gateway folds what it settled in the background (within half a second), not only
    when Activity is read."""
    account_id, key = await new_account(ac, purchase="5.00")
    spent = await _use(ac, key, "test/paid", 2)
    day = AccountKeys(account_id).rollup("day", bucket_start("day", DAY0 + 3600))
    redis = store_client(redis_url)
    try:
        stored: dict[str, str] = {}
        for _ in range(50):  # 5 s at most
            stored = await redis.hgetall(day)
            if stored:
                break
            await asyncio.sleep(0.1)
        by_metric = {name[-1]: int(value) for name, value in stored.items()}
        assert by_metric.get("n") == 2
        assert Decimal(by_metric.get("s", 0)) / 10**9 == spent
    finally:
        await redis.aclose()
