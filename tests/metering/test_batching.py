"""The request path's script batcher (metering/batching.py) against a real Redis: many calls in
one write each get their own reply, a script's error stays its own, a restarted Redis (dead
connections, forgotten scripts) is invisible to callers, and a caller that stops waiting never
leaves a stale reply for the next one."""

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.runtime.redis_server import RedisServer, find_binaries, free_port
from metering.transport.batch_calls import pack_command
from metering.transport.batching import MAX_IN_FLIGHT, ScriptBatcher
from metering.transport.pipelined import PipelinedConnection

pytestmark = pytest.mark.skipif(not find_binaries(), reason="no redis-server or valkey-server")

ECHO = "return {KEYS[1], ARGV[1]}"
FAIL = "return redis.error_reply('ERR failing on purpose ' .. ARGV[1])"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    s = RedisServer(tmp_path / "redis", port=free_port()).start()
    yield s
    s.stop()


@pytest.fixture
async def batcher(server: RedisServer) -> AsyncIterator[tuple[ScriptBatcher, Redis]]:
    redis = Redis.from_url(server.url, decode_responses=True)
    batcher = ScriptBatcher(redis.connection_pool.make_connection, timeout=5)
    yield batcher, redis
    await batcher.aclose()
    await redis.aclose()


@contextlib.contextmanager
def _hung(server: RedisServer) -> Iterator[None]:
    """Redis stopped (SIGSTOP): it takes connections and bytes, and answers nothing."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


async def _each_caller_gets_its_own_reply(
    calls: ScriptBatcher, redis: Redis, *, count: int, failing_every: int
) -> None:
    """`count` calls in one go, every `failing_every`-th a script that fails: each caller gets
    its own reply or its own script's error."""
    echo, fail = redis.register_script(ECHO), redis.register_script(FAIL)
    replies = await asyncio.gather(
        *(
            calls.submit(fail if n % failing_every == 1 else echo, [f"k{n}"], [n], 5.0)
            for n in range(count)
        ),
        return_exceptions=True,
    )
    for n, reply in enumerate(replies):
        if n % failing_every == 1:
            assert isinstance(reply, ResponseError) and f"purpose {n}" in str(reply)
        else:
            assert reply == [f"k{n}", str(n)]


async def test_one_write_many_replies_each_to_its_caller(
    batcher: tuple[ScriptBatcher, Redis],
) -> None:
    calls, redis = batcher
    await _each_caller_gets_its_own_reply(calls, redis, count=300, failing_every=10)


async def test_a_restarted_redis_is_invisible_to_callers(
    server: RedisServer, batcher: tuple[ScriptBatcher, Redis]
) -> None:
    calls, redis = batcher
    echo = redis.register_script(ECHO)
    assert await calls.submit(echo, ["a"], [1], 5.0) == ["a", "1"]
    server.stop()
    server.start()  # every idle connection is dead, and the script is forgotten
    replies = await asyncio.gather(*(calls.submit(echo, ["b"], [n], 5.0) for n in range(20)))
    assert replies == [["b", str(n)] for n in range(20)]


async def test_scripts_flushed_under_a_live_connection_are_loaded_again(
    batcher: tuple[ScriptBatcher, Redis],
) -> None:
    """SCRIPT FLUSH (or a failover) while the batcher's connections stay open: the calls that
    meet NOSCRIPT are sent again after their scripts, and each caller gets its own reply."""
    calls, redis = batcher
    assert await calls.submit(redis.register_script(ECHO), ["warm"], [0], 5.0) == ["warm", "0"]
    await redis.script_flush()
    await _each_caller_gets_its_own_reply(calls, redis, count=40, failing_every=5)


async def test_a_caller_that_stops_waiting_leaves_no_stale_reply(
    server: RedisServer, batcher: tuple[ScriptBatcher, Redis]
) -> None:
    calls, redis = batcher
    echo = redis.register_script(ECHO)
    assert await calls.submit(echo, ["warm"], [0], 5.0) == ["warm", "0"]
    with _hung(server), pytest.raises(RedisTimeoutError):
        await calls.submit(echo, ["late"], [1], 0.2)
    for n in range(10):  # the late reply was read and dropped by its batch, not by these
        assert await calls.submit(echo, ["next"], [n], 5.0) == ["next", str(n)]


async def test_a_hung_redis_holds_a_bounded_number_of_connections(
    server: RedisServer, batcher: tuple[ScriptBatcher, Redis]
) -> None:
    """Calls keep coming while Redis hangs: each caller gets its timeout, the batcher keeps at
    most MAX_IN_FLIGHT batches (connections) out, and all is well once Redis answers again."""
    calls, redis = batcher
    echo = redis.register_script(ECHO)
    assert await calls.submit(echo, ["warm"], [0], 5.0) == ["warm", "0"]
    with _hung(server):
        waiting = []
        for n in range(300):  # one call per loop turn: a batch each, but for the bound
            waiting.append(asyncio.ensure_future(calls.submit(echo, ["hung"], [n], 0.3)))
            await asyncio.sleep(0)
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(o, RedisTimeoutError) for o in outcomes)
        assert len(calls._running) <= MAX_IN_FLIGHT
    assert await calls.submit(echo, ["after"], [1], 5.0) == ["after", "1"]


@pytest.mark.parametrize("socket", ["tcp", "unix"])
async def test_the_urls_password_and_database_hold_on_batched_connections(
    tmp_path: Path, socket: str
) -> None:
    """The batcher's connections are opened by redis-py (AUTH, SELECT) and then read by the
    gateway's own parser: the script runs as the URL's user, in the URL's database."""
    server = RedisServer(tmp_path / "redis", port=free_port() if socket == "tcp" else None).start()
    try:
        admin = Redis.from_url(server.url, decode_responses=True)
        await admin.config_set("requirepass", "s3cret")
        await admin.aclose()
        base = server.url.split("?")[0].rsplit("/", 1)[0] if socket == "tcp" else server.url
        if socket == "tcp":
            url = base.replace("redis://", "redis://:s3cret@") + "/3"
        else:
            url = base.replace("unix://", "unix://:s3cret@").replace("db=0", "db=3")
        redis = Redis.from_url(url, decode_responses=True)
        batcher = ScriptBatcher(redis.connection_pool.make_connection, timeout=5)
        put = redis.register_script("redis.call('SET', KEYS[1], ARGV[1]) return 'stored'")
        assert await batcher.submit(put, ["where"], ["é" * 3], 5.0) == "stored"
        assert await redis.get("where") == "é" * 3
        await batcher.aclose()
        await redis.aclose()
        in_db0 = Redis.from_url(url.replace("/3", "/0").replace("db=3", "db=0"))
        assert await in_db0.exists("where") == 0
        await in_db0.aclose()
    finally:
        server.stop()


async def test_a_batch_past_the_batchers_bound_fails_and_drops_its_connection(
    server: RedisServer,
) -> None:
    """A caller without a bound of its own still gets an answer when Redis hangs: the batch's
    bound fails it, and the connection (now out of step with its replies) is not used again."""
    redis = Redis.from_url(server.url, decode_responses=True)
    calls = ScriptBatcher(redis.connection_pool.make_connection, timeout=0.3)
    try:
        echo = redis.register_script(ECHO)
        assert await calls.submit(echo, ["warm"], [0]) == ["warm", "0"]  # leaves an idle one
        with _hung(server), pytest.raises(RedisTimeoutError):
            async with asyncio.timeout(5):
                await calls.submit(echo, ["late"], [1])
        for n in range(10):
            assert await calls.submit(echo, ["next"], [n], 5.0) == ["next", str(n)]
    finally:
        await calls.aclose()
        await redis.aclose()
    with pytest.raises(ConnectionError):  # closed: refused at once, never queued
        await calls.submit(echo, ["after"], [0], 1.0)


@pytest.mark.parametrize("socket", ["tcp", "unix"])
async def test_a_write_counts_as_delivered_only_once_nothing_of_it_is_left_here(
    tmp_path: Path, socket: str
) -> None:
    """`delivered` lets a completion be answered before Redis replies to its settlement: it must
    mean the bytes have left this process for Redis's side, even while Redis is not reading."""
    server = RedisServer(tmp_path / "redis", port=free_port() if socket == "tcp" else None).start()
    redis = Redis.from_url(server.url, decode_responses=True)
    connection = await PipelinedConnection.open(redis.connection_pool.make_connection())
    try:
        assert not connection.delivered  # it has never answered
        assert await connection.send(pack_command((b"PING",)), 1) == ["PONG"]
        assert connection.delivered
        with _hung(server):
            small = connection.send(pack_command((b"SET", b"small", b"x")), 1)
            await asyncio.sleep(0.05)
            assert connection.delivered  # in Redis's receive queue, though Redis is stopped
            big = connection.send(pack_command((b"SET", b"big", b"x" * 32 * 1024 * 1024)), 1)
            await asyncio.sleep(0.05)
            assert not connection.delivered  # most of 32 MB cannot have left
        assert await small == ["OK"]
        assert await big == ["OK"]
        assert connection.delivered
    finally:
        connection.close()
        await redis.aclose()
        server.stop()


async def test_a_lone_caller_is_written_at_once_and_a_crowd_is_batched(
    server: RedisServer,
) -> None:
    """Unloaded, a settlement is handed to the kernel in its caller's own step (no wait for the
    end of the loop turn before the answer can go out); with others about, calls wait for the
    turn's batch."""
    redis = Redis.from_url(server.url, decode_responses=True)
    alone = [True]
    calls = ScriptBatcher(redis.connection_pool.make_connection, timeout=5, alone=lambda: alone[0])
    echo = redis.register_script(ECHO)
    loop = asyncio.get_running_loop()
    try:
        assert await calls.submit(echo, ["warm"], [0], 5.0) == ["warm", "0"]
        await asyncio.sleep(0)  # the first batch's task (it opened the connection) ends
        sent: asyncio.Future[None] = loop.create_future()
        reply = calls.submit(echo, ["lone"], [1], 5.0, sent)
        assert sent.done()  # before this coroutine gave the loop a turn
        assert await reply == ["lone", "1"]

        alone[0] = False
        sent = loop.create_future()
        reply = calls.submit(echo, ["crowd"], [2], 5.0, sent)
        assert not sent.done()  # it waits for the others of this turn
        assert await reply == ["crowd", "2"]
        assert sent.done()
    finally:
        await calls.aclose()
        await redis.aclose()
