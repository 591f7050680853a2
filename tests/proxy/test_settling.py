"""A completion is answered once its settlement is written to Redis, not once Redis replied
(gateway/proxy/settle/settling.py). The books must not show the difference: reads that follow an
answer see its charge, and a gateway that shuts down right after answering still lands every
settlement.

Redis is made slow to settle with CLIENT PAUSE WRITE, sent by the provider while it answers: the
admission has run by then, the settlement script waits in Redis, and reads still go through.
"""

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.proxy.settle.settling import SETTLING
from gateway.runtime.redis_server import RedisServer, find_binaries, free_port
from metering.admission import Metering
from tests.support import ThreadedServer, bearer, chat, make_settings, new_account

pytestmark = pytest.mark.skipif(not find_binaries(), reason="no redis-server or valkey-server")
PAUSE_MS = 1500
T = TypeVar("T")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", port=free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def pausing_provider(own_redis: RedisServer) -> Iterator[ThreadedServer]:
    """Answers like a provider, after pausing Redis's writes: the settlement comes next."""

    async def complete(request: web.Request) -> web.Response:
        with redis.Redis.from_url(own_redis.url) as r:
            r.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")
        return web.json_response(
            {
                "id": "up-1",
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Hi"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", complete)
    server = ThreadedServer(app).start()
    yield server
    server.stop()


@pytest.fixture
async def gateway(
    own_redis: RedisServer, pausing_provider: ThreadedServer, tmp_path: Path
) -> AsyncIterator[TestClient]:
    settings = make_settings(own_redis.url, pausing_provider.url, data_dir=tmp_path / "data")
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as client:
        yield client


def _usage_in_redis(url: str, account_id: str) -> int:
    with redis.Redis.from_url(url, decode_responses=True) as r:
        return int(r.hget(f"gw:{{a:{account_id}}}:acct", "usage") or 0)


async def test_reads_after_an_answer_see_its_charge(
    gateway: TestClient, own_redis: RedisServer
) -> None:
    account_id, key = await new_account(gateway, purchase="1.00")
    resp = await gateway.post(
        "/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key)
    )
    assert resp.status == 200
    cost = Decimal(str((await resp.json())["usage"]["cost"]))
    assert cost > 0
    # Answered while the settlement still waits in Redis...
    assert _usage_in_redis(own_redis.url, account_id) == 0
    assert len(gateway.app[SETTLING]) == 1
    # Probes do not wait for it...
    assert (await gateway.get("/healthz")).status == 200
    assert len(gateway.app[SETTLING]) == 1
    # ...and yet the client's next read finds the charge, to the nanodollar.
    credits = await (await gateway.get("/api/v1/credits", headers=bearer(key))).json()
    assert Decimal(str(credits["data"]["total_usage"])) == cost
    generation = await gateway.get(
        f"/api/v1/generation?id={resp.headers['X-Generation-Id']}", headers=bearer(key)
    )
    assert generation.status == 200
    assert Decimal(str((await generation.json())["data"]["total_cost"])) == cost


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_answer_does_not_wait_for_redis_and_a_shutdown_still_lands_the_settlement(
    loop: str, own_redis: RedisServer, pausing_provider: ThreadedServer, tmp_path: Path
) -> None:
    """On both event loops (`gateway serve` runs on uvloop, the tests' own loop is asyncio's):
    each has its own write path, and the answer may leave only once the settlement's bytes are
    in the kernel on a connection that has answered before. The gateway, closed right after
    the answer, waits for the settlement before it closes its connections."""
    runner = _runner(loop)

    async def scenario() -> tuple[str, int, int, Decimal]:
        settings = make_settings(own_redis.url, pausing_provider.url, data_dir=tmp_path / "data")
        async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as client:
            account_id, key = await new_account(client, purchase="1.00")
            resp = await client.post(
                "/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key)
            )
            assert resp.status == 200
            cost = Decimal(str((await resp.json())["usage"]["cost"]))
            applied_at_answer = _usage_in_redis(own_redis.url, account_id)
            out_at_answer = len(client.app[SETTLING])
        return account_id, applied_at_answer, out_at_answer, cost

    account_id, applied_at_answer, out_at_answer, cost = runner(scenario())
    assert (applied_at_answer, out_at_answer) == (0, 1)  # answered; Redis still holds the script
    # The app is closed: the settlement landed first, to the nanodollar.
    assert Decimal(_usage_in_redis(own_redis.url, account_id)) / 10**9 == cost


def _runner(loop: str) -> Callable[[Coroutine[Any, Any, T]], T]:
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return cast(Callable[[Coroutine[Any, Any, T]], T], uvloop.run)
    return asyncio.run


async def test_a_settlement_redis_holds_past_shutdown_is_journaled_and_lands_once(
    own_redis: RedisServer, pausing_provider: ThreadedServer, tmp_path: Path
) -> None:
    """The answer went out; Redis then holds the settlement longer than the gateway may wait
    while it shuts down. The charge goes to the journal, and the next process lands it once."""
    settings = make_settings(
        own_redis.url, pausing_provider.url, data_dir=tmp_path / "data", redis_timeout_seconds=0.5
    )
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as client:
        account_id, key = await new_account(client, purchase="1.00")
        resp = await client.post(
            "/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key)
        )
        assert resp.status == 200
        cost_nanos = int(Decimal(str((await resp.json())["usage"]["cost"])) * 10**9)
    assert _usage_in_redis(own_redis.url, account_id) == 0  # still paused: not applied
    journaled = [f.read_text() for f in (tmp_path / "data").glob("settlements-*.jsonl")]
    assert sum(text.count("\n") for text in journaled) == 1  # but journaled
    await asyncio.sleep(PAUSE_MS / 1000)  # Redis takes writes again
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")):
        for _ in range(100):  # the replayer runs every journal_replay_seconds
            if _usage_in_redis(own_redis.url, account_id):
                break
            await asyncio.sleep(0.1)
    assert _usage_in_redis(own_redis.url, account_id) == cost_nanos


async def test_a_settlement_that_cannot_be_sent_still_answers_and_is_journaled(
    redis_url: str, provider: ThreadedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug between the answer and Redis (here: the settlement's inputs cannot be built) must
    neither hang the client's request nor lose the charge: it goes to the journal."""
    settings = make_settings(redis_url, provider.url, data_dir=tmp_path / "data")
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as client:
        _, key = await new_account(client, purchase="1.00")

        def broken(*args: object) -> None:
            raise ValueError("a bug in the settlement's inputs")

        monkeypatch.setattr(Metering, "_settlement", broken)
        resp = await asyncio.wait_for(
            client.post("/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key)),
            10,
        )
        assert resp.status == 200
        generation_id = resp.headers["X-Generation-Id"]
    journaled = "".join(f.read_text() for f in (tmp_path / "data").glob("settlements-*.jsonl"))
    assert journaled.count("\n") == 1 and generation_id in journaled
