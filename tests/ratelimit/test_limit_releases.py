"""What a request holds of token and concurrency limits goes back on the paths where Redis was
not there to take it: an admission whose reply was lost (answered 503, its script run late), a
settlement journaled while Redis was away (replayed later), and an admission run twice (a batch
resent after a lost connection)."""

import asyncio
import os
import signal
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from config.limits import parse_limits
from gateway.app import create_app
from gateway.limits import LIMITS
from gateway.proxy.settle.journal import JOURNAL
from gateway.redis_clients import store_client
from gateway.runtime.redis_server import RedisServer, free_port
from gateway.state import SERVICES
from metering.accounts import AccountStore, hash_secret
from metering.admission import AdmissionResult, Metering, Refusal
from metering.layout import AccountKeys
from metering.scripts import Scripts
from metering.usage import new_generation_id
from ratelimit.policy import Policy
from ratelimit.store import (
    ScriptInputs,
    Tokens,
    admission_inputs,
    admission_prelude,
    counter_key,
)
from tests.support import ThreadedServer, bearer, chat, make_settings, new_account, usage_record

LIMITS_FILE = """\
    [[limits]]
    name = "streams"
    scope = "key"
    match = "all"
    concurrent = 1

    [[limits]]
    name = "tpm"
    match = "all"
    unit = "minute"
    tokens = 100000
    """


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", port=free_port(), appendfsync="always").start()
    yield server
    server.stop()


def app_settings(redis: RedisServer, provider: ThreadedServer, tmp_path: Path, **kw: Any) -> Any:
    limits = tmp_path / "limits.toml"
    limits.write_text(textwrap.dedent(LIMITS_FILE))
    return make_settings(
        redis.url, provider.url, data_dir=tmp_path / "data", limits_file=str(limits), **kw
    )


async def limit_states(client: TestClient, key: str) -> dict[str, dict[str, Any]]:
    data = (await (await client.get("/api/v1/key", headers=bearer(key))).json())["data"]
    return {s["name"]: s for s in data["rate_limits"]}


async def places_back(client: TestClient, key: str) -> None:
    """Every place in flight given back, once the settlements have landed (bounded)."""
    for _ in range(100):
        if (await limit_states(client, key))["streams"]["used"] == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("a place in flight was not given back")


async def test_a_journaled_settlement_gives_back_its_place_and_tokens_when_replayed(
    own_redis: RedisServer, provider: ThreadedServer, tmp_path: Path
) -> None:
    settings = app_settings(
        own_redis, provider, tmp_path, journal_replay_seconds=0.1, redis_timeout_seconds=0.5
    )
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as c:
        _, key = await new_account(c, purchase="1.00")
        call = asyncio.ensure_future(
            c.post("/api/v1/chat/completions", json=chat("test/slow"), headers=bearer(key))
        )
        await asyncio.sleep(1.0)  # admitted; the provider takes 3 s to answer
        own_redis.stop()  # Redis goes away before the settlement
        resp = await call
        assert resp.status == 200
        used = (await resp.json())["usage"]["total_tokens"]
        journal = c.app[JOURNAL]
        assert journal.pending() == 1
        own_redis.start()  # back, on the same append-only file
        for _ in range(100):
            if journal.pending() == 0:
                break
            await asyncio.sleep(0.1)
        assert journal.pending() == 0
        # The replay gave the place back (not its expiry, 900 s on) and trued the window up.
        states = await limit_states(c, key)
        assert states["streams"]["used"] == 0
        assert states["tpm"]["used"] == used
        again = await c.post(
            "/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key)
        )
        assert again.status == 200


async def test_an_admission_run_twice_counts_once(
    own_redis: RedisServer, provider: ThreadedServer, tmp_path: Path
) -> None:
    """A free request reserves no money, yet its admission marks it admitted: the same admission
    run again (its batch resent) is a retry that takes no second place and no second worst case."""
    settings = app_settings(own_redis, provider, tmp_path)
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as c:
        account_id, key = await new_account(c)
        limits = c.app[LIMITS].policy.applicable("test/free:free", "sim", True)
        key_hash, generation_id, now = hash_secret(key), new_generation_id(account_id), time.time()
        inputs = admission_inputs(account_id, key_hash, limits, now, Tokens(40, 60), 900)
        for _ in range(2):
            result = await c.app[SERVICES].metering.admit(
                account_id,
                key_hash,
                generation_id,
                0,
                paid=False,
                now=now,
                limit_keys=inputs.keys,
                limit_args=inputs.args,
            )
            assert result.admitted
        states = await limit_states(c, key)
        assert states["streams"]["used"] == 1
        assert states["tpm"]["used"] == 100
        # The place is this one admission's, once: the next request is the one refused.
        refused = await c.post(
            "/api/v1/chat/completions", json=chat("test/free:free"), headers=bearer(key)
        )
        assert refused.status == 429
        assert (await refused.json())["error"]["metadata"]["limit"] == "streams"


async def test_a_place_taken_by_an_admission_answered_503_is_given_back(
    provider: ThreadedServer, tmp_path: Path
) -> None:
    """Redis hangs: the request is answered 503, but its admission script may still run once
    Redis answers again. Its place goes back at once then, not when it would expire (900 s)."""
    redis = RedisServer(tmp_path / "redis", port=free_port(), appendonly=False).start()
    try:
        settings = app_settings(
            redis, provider, tmp_path, key_cache_seconds=600, admission_timeout_seconds=0.25
        )
        async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as c:
            _, key = await new_account(c)
            body = chat("test/free:free")
            ok = await c.post("/api/v1/chat/completions", json=body, headers=bearer(key))
            assert ok.status == 200
            assert redis.process is not None
            os.kill(redis.process.pid, signal.SIGSTOP)  # no answer, no refusal
            try:
                lost = await c.post("/api/v1/chat/completions", json=body, headers=bearer(key))
            finally:
                os.kill(redis.process.pid, signal.SIGCONT)
            assert lost.status == 503
            # The late admission may still be on its way: within seconds (not 900), its place
            # is back and a request gets in.
            status = 0
            for _ in range(100):
                again = await c.post("/api/v1/chat/completions", json=body, headers=bearer(key))
                status = again.status
                if status == 200:
                    break
                await asyncio.sleep(0.05)
            assert status == 200
            await places_back(c, key)
    finally:
        redis.stop()


async def test_a_lease_holding_no_credit_still_gives_back_its_window_slices(
    own_redis: RedisServer,
) -> None:
    """Key A's requests are leased with a slice of A's own token window; then a renewal for key
    B finds the balance negative and the lease holds no credit: A's slice still goes back (it
    used to be forgotten, its tokens counted for the rest of the day)."""
    redis = store_client(own_redis.url)
    try:
        metering = Metering(
            redis,
            Scripts(redis, admission_prelude=admission_prelude()),
            reservation_timeout=60,
            record_ttl_seconds=60,
            lease_above_per_second=1,
            lease_seconds=5,
        )
        accounts = AccountStore(redis, Scripts(redis))
        now = time.time()
        account = await accounts.create_account("a", 10**13, now)
        _, key_a = await accounts.create_key(account.id, "a", now)
        _, key_b = await accounts.create_key(account.id, "b", now)
        text = '[[limits]]\nname="tpk"\nmatch="all"\nscope="key"\nunit="day"\ntokens=100000\n'
        limits = Policy(parse_limits(text, "limits.toml")).limits

        async def admit(key_hash: str) -> tuple[AdmissionResult, ScriptInputs, str]:
            inputs = admission_inputs(account.id, key_hash, limits, now, Tokens(10, 20), 60)
            generation_id = new_generation_id(account.id)
            result = await metering.admit(
                account.id,
                key_hash,
                generation_id,
                1000,
                paid=True,
                now=now,
                limit_keys=inputs.keys,
                limit_args=inputs.args,
                limit_counters=inputs.counters,
                limit_takes=inputs.takes,
                leasable=True,
            )
            return result, inputs, generation_id

        for _ in range(2):  # the second is admitted from the lease, with a slice of A's window
            result, inputs, generation_id = await admit(key_a.hash)
            record = usage_record(account.id, key_a.hash, generation_id, 500)  # 1 + 1 tokens
            held = [
                h.give_back(record.tokens_prompt, record.tokens_completion) for h in inputs.holds
            ]
            reply = await metering.send_settlement(record, now, lease=result.lease, held=held)
            metering.settled(record, reply, now, result.lease)
        assert result.lease is not None
        window_a = counter_key(account.id, key_a.hash, limits[0], now)
        assert int(await redis.get(window_a)) > 4  # the slice is counted ahead
        await redis.hset(AccountKeys(account.id).account, "balance", -1)
        result, _, _ = await admit(key_b.hash)
        assert result.refusal is Refusal.NEGATIVE_BALANCE
        await metering.leases.tick(now + 30)
        await metering.leases.close(now + 31)
        assert int(await redis.get(window_a)) == 4  # what A's two requests used, nothing more
    finally:
        await redis.aclose()
