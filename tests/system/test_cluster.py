"""The gateway on a real Redis Cluster (three masters, a replica each, AOF on), with two `gateway
serve` processes on their own ports and data directories, as on two machines: accounts spread over
every master, limits and books shared, a master SIGKILLed under load (its replica takes over) and
restarted, a slot moved to another master under load. Afterwards the books hold against every
client (bench/audit.py). The rest of the suite runs on a cluster too (TEST_REDIS=cluster, the
second pass of `make test`)."""

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer
from redis.crc import key_slot

from bench.audit import problems, read_books
from bench.cluster import LocalCluster
from bench.stack import FREE_MODELS, LIMITS, PAID_MODELS, Stack
from bench.traffic import Mix, Outcome, Traffic
from gateway.app import create_app
from gateway.proxy.settle.journal import JOURNAL
from gateway.runtime.redis_server import find_binaries
from metering.layout import AccountKeys
from tests.support import (
    ThreadedServer,
    account_state,
    bearer,
    chat,
    make_settings,
    new_account,
)

pytestmark = pytest.mark.skipif(not find_binaries(), reason="no redis-server or valkey-server")

FREE_PER_MINUTE = 5
SHARED_LIMITS = LIMITS.replace("requests = 600", f"requests = {FREE_PER_MINUTE}")
WORST_CASE_NANOS = 61_000  # fault/paid's reservation for a short prompt, about
CALM = {200, 402, 429, 503}  # what clients may see while a master fails over or a slot moves


@pytest.fixture
def cstack(tmp_path: Path) -> Iterator[tuple[Stack, str]]:
    """The stack on a cluster, and a second gateway's base URL."""
    stack = Stack(tmp_path, cluster=True, appendfsync="always", limits=SHARED_LIMITS)
    try:
        stack.start()
        yield stack, stack.add_gateway()
    finally:
        stack.stop()


def _slot(account_id: str) -> int:
    return key_slot(AccountKeys(account_id).account.encode())


async def _call(url: str, key: str, model: str, stream: bool = False) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    headers = {"Authorization": f"Bearer {key}"}
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url + "/api/v1/chat/completions", json=body, headers=headers) as r,
    ):
        await r.read()
        return r.status


async def _both(stack: Stack, other: str, key: str, seconds: float) -> list[Outcome]:
    """Mixed traffic (streams, free and paid) through both gateways at once."""
    mix = Mix(paid_models=PAID_MODELS, free_models=FREE_MODELS, free_share=0.1, stream_share=0.3)
    loads = [
        Traffic(url, key, mix, concurrency=8, seed=seed, request_timeout=20.0).run(seconds)
        for seed, url in ((1, stack.url), (2, other))
    ]
    runs = await asyncio.gather(*loads)
    return [outcome for run in runs for outcome in run]


async def test_two_gateways_share_one_cluster(cstack: tuple[Stack, str]) -> None:
    stack, other = cstack
    assert stack.cluster is not None
    owners: set[int | None] = set()
    for _ in range(60):  # new accounts land on every master (all three missing one: 1e-10)
        created, _ = stack.new_account(grant="1")
        owners.add(stack.cluster.master_of_slot(_slot(created)).port)
        if len(owners) == 3:
            break
    assert len(owners) == 3, "accounts should land on all three masters"

    account_id, key = stack.new_account(purchase="5")
    # A limit counted by both gateways together: 5 free requests a minute, not 5 each.
    free = [await _call(url, key, FREE_MODELS[0]) for url in (stack.url, other) * 4]
    assert free.count(200) == FREE_PER_MINUTE and free.count(429) == 8 - FREE_PER_MINUTE
    outcomes = await _both(stack, other, key, 3.0)
    assert sum(o.status == 200 for o in outcomes) > 50
    assert {o.status for o in outcomes} <= {200, 429}
    # What one gateway settled, the other reads: the books through the second gateway.
    books = await read_books(other, stack.admin_token, account_id, key)
    assert problems(books, outcomes) == []

    # Requests racing through both gateways on an account that can afford ten: none overspent.
    grant = f"{WORST_CASE_NANOS * 10 / 1e9:.9f}"
    poor_id, poor_key = stack.new_account(grant=grant)
    racers = [
        Traffic(url, poor_key, Mix(paid_models=[PAID_MODELS[0]], stream_share=0))
        for url in (stack.url, other)
    ]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:
        await asyncio.gather(*(racers[n % 2].one(session) for n in range(200)))
    raced = [*racers[0].outcomes, *racers[1].outcomes]
    assert {o.status for o in raced} <= {200, 402} and sum(o.status == 200 for o in raced) > 0
    poor = await read_books(stack.url, stack.admin_token, poor_id, poor_key)
    assert problems(poor, raced) == [] and poor.money("balance") >= 0


async def _ready_statuses(url: str, seconds: float) -> list[int]:
    statuses = []
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url + "/readyz") as resp:
                    statuses.append(resp.status)
            except (aiohttp.ClientError, TimeoutError):
                statuses.append(0)
            await asyncio.sleep(0.05)
    return statuses


async def test_a_master_killed_under_load_fails_over_and_the_books_hold(
    cstack: tuple[Stack, str],
) -> None:
    stack, other = cstack
    cluster = stack.cluster
    assert cluster is not None
    account_id, key = stack.new_account(purchase="20")
    master = cluster.master_of_slot(_slot(account_id))
    load = asyncio.create_task(_both(stack, other, key, 9.0))
    await asyncio.sleep(2.0)
    killed_at = time.monotonic()
    await asyncio.to_thread(cluster.kill, master)  # SIGKILL; its replica is promoted
    readiness = asyncio.create_task(_ready_statuses(stack.url, 1.5))
    await asyncio.to_thread(cluster.wait_serving)
    failover_seconds = time.monotonic() - killed_at
    await asyncio.sleep(1.0)
    await asyncio.to_thread(cluster.restart, master)  # back, as a replica of its replica
    outcomes = await load
    assert 503 in await readiness, "readyz said ready while a master was down"
    await asyncio.to_thread(cluster.wait_healthy)

    statuses = {o.status for o in outcomes}
    assert statuses <= CALM, statuses  # no hang, no dropped connection, no 5xx but 503
    assert sum(o.status == 200 for o in outcomes) > 50
    assert failover_seconds < 10, failover_seconds
    books = await _settled_books(stack, account_id, key)
    assert problems(books, outcomes) == []


async def _settled_books(stack: Stack, account_id: str, key: str):  # type: ignore[no-untyped-def]
    """The books once both gateways' journals are replayed and nothing is reserved (bounded)."""
    books = None
    for _ in range(100):
        books = await read_books(stack.url, stack.admin_token, account_id, key)
        if books.money("reserved") == 0:
            break
        await asyncio.sleep(0.1)
    return books


async def test_a_slot_moved_under_load_keeps_the_books(cstack: tuple[Stack, str]) -> None:
    stack, other = cstack
    cluster = stack.cluster
    assert cluster is not None
    account_id, key = stack.new_account(purchase="20")
    slot = _slot(account_id)
    source = cluster.master_of_slot(slot)
    target = next(node for node in cluster.masters_now() if node is not source)
    load = asyncio.create_task(_both(stack, other, key, 6.0))
    await asyncio.sleep(1.5)
    moved = await asyncio.to_thread(cluster.move_slot, slot, target, 2, 0.05)
    assert moved > 5 and cluster.master_of_slot(slot) is target
    outcomes = await load
    statuses = {o.status for o in outcomes}
    assert statuses <= CALM, statuses
    assert sum(o.status == 200 for o in outcomes) > 50
    books = await _settled_books(stack, account_id, key)
    assert problems(books, outcomes) == []


async def test_a_plain_url_to_one_node_runs_on_the_whole_cluster(
    redis_clusters: list[LocalCluster], provider: ThreadedServer
) -> None:
    """`redis://` to one node of a cluster: the gateway finds the cluster from it and uses it
    (without that, most accounts would meet MOVED while /readyz said ready)."""
    node = redis_clusters[0].nodes[0]
    settings = make_settings(f"redis://127.0.0.1:{node.port}/0", provider.url)
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as c:
        assert (await c.get("/readyz")).status == 200
        for _ in range(6):  # accounts on other masters than the named node, too
            _, key = await new_account(c, purchase="1.00")
            answer = await c.post(
                "/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key)
            )
            assert answer.status == 200, await answer.text()


async def test_readyz_says_why_when_a_slot_is_not_served(
    tmp_path: Path, provider: ThreadedServer
) -> None:
    cluster = LocalCluster(tmp_path / "cluster", replicas=0).start()
    try:
        settings = make_settings(cluster.url, provider.url)
        async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as c:
            assert (await c.get("/readyz")).status == 200
            owner = cluster.master_of_slot(42)
            with redis.Redis(port=owner.port) as r:
                r.execute_command("CLUSTER DELSLOTS", 42)
            statuses = []
            for _ in range(100):
                answer = await c.get("/readyz")
                statuses.append(answer.status)
                if answer.status == 503:
                    message = (await answer.json())["error"]["message"]
                    assert "cluster_state:fail" in message or "slots" in message, message
                    break
                await asyncio.sleep(0.05)
            assert statuses[-1] == 503, statuses
    finally:
        cluster.stop()


async def test_a_settlement_no_replica_confirms_is_journaled_until_one_does(
    tmp_path: Path, provider: ThreadedServer
) -> None:
    """Replication is asynchronous: a settlement the master acknowledged could be missing on the
    replica that takes over. So a settlement waits (WAIT) for a replica; when none confirms in
    time (here the replica is frozen with SIGSTOP), it is journaled and run again, idempotently,
    until one does. The client's answer never waits for it."""
    cluster = LocalCluster(tmp_path / "cluster", node_timeout_ms=5000).start()
    try:
        settings = make_settings(
            cluster.url, provider.url, data_dir=tmp_path / "data", journal_replay_seconds=0.2
        )
        async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as c:
            account_id, key = await new_account(c, purchase="1.00")
            replica = cluster.replica_of(cluster.master_of_slot(_slot(account_id)))
            assert replica.process is not None
            journal = c.app[JOURNAL]
            first = await c.post(  # the gateway learns that the master has a replica
                "/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key)
            )
            assert first.status == 200
            await asyncio.sleep(0.3)
            assert journal.pending() == 0  # confirmed by the replica: nothing journaled
            os.kill(replica.process.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                answer = await c.post(
                    "/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key)
                )
                assert answer.status == 200 and time.monotonic() - started < 1.0
                for _ in range(50):  # the WAIT times out after 100 ms: journaled
                    if journal.pending():
                        break
                    await asyncio.sleep(0.05)
                assert journal.pending() == 1
                await asyncio.sleep(1.0)  # replayed every 0.2 s, and still no replica confirms
                assert journal.pending() == 1
            finally:
                os.kill(replica.process.pid, signal.SIGCONT)
            for _ in range(200):  # a replica confirms the replay: the journal empties
                if not journal.pending():
                    break
                await asyncio.sleep(0.05)
            assert journal.pending() == 0
            state = await account_state(c, account_id)
            costs = [Decimal(str((await a.json())["usage"]["cost"])) for a in (first, answer)]
            assert Decimal(state["balance"]) == Decimal("1.00") - sum(costs)  # charged once
            assert state["reserved"] == "0.00"
    finally:
        cluster.stop()
