"""Clients that read slowly or not at all, and providers that never finish: the gateway applies
backpressure (its memory stays flat while a provider floods a stalled reader), drops a client that
takes no bytes for `client_write_timeout`, bounds a provider's whole answer by
`upstream_total_timeout`, and charges what was generated, no more."""

import asyncio
import gc
import socket
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bench.audit import problems, read_books
from bench.stack import Stack, rss_bytes
from gateway.app import create_app
from gateway.proxy.relay.client_writes import ClientWrites
from gateway.runtime.redis_server import find_binaries
from gateway.runtime.server import start_site
from gateway.runtime.simulated_basics import FLOOD_CHUNKS
from tests.support import ThreadedServer, account_state, bearer, chat, make_settings, new_account

pytestmark = pytest.mark.skipif(not find_binaries(), reason="no redis-server or valkey-server")

WRITE_TIMEOUT = 4


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path, gateway_env={"GATEWAY_CLIENT_WRITE_TIMEOUT": str(WRITE_TIMEOUT)})
    try:
        yield s.start()
    finally:
        s.stop()


async def provider_stats(url: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as session, session.get(url + "/_sim/stats") as resp:
        stats: dict[str, int] = await resp.json()
        return stats


async def test_a_stalled_reader_pauses_the_provider_and_is_dropped(stack: Stack) -> None:
    assert stack.gateway is not None
    account_id, key = stack.new_account(purchase="20")
    host, port = stack.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # a reader that stalls
    sock.connect((host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    body = orjson.dumps(chat("fault/flood", stream=True))
    writer.write(
        b"POST /api/v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
        + f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200"), head
    generation_id = next(
        line.split(b":", 1)[1].strip().decode()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"x-generation-id:")
    )
    await asyncio.wait_for(reader.readexactly(4096), 10)  # the stream has begun; now stall
    await asyncio.sleep(1.0)
    rss_before = rss_bytes(stack.gateway.pid)
    sent_before = (await provider_stats(stack.provider_url))["chunks_sent"]
    await asyncio.sleep(1.5)
    rss_after = rss_bytes(stack.gateway.pid)
    sent_after = (await provider_stats(stack.provider_url))["chunks_sent"]
    # Backpressure reached the provider: it is stuck well short of its 200 MB ...
    assert sent_after == sent_before, (sent_before, sent_after)
    assert sent_after < FLOOD_CHUNKS // 10
    # ... and the gateway holds no more than socket buffers' worth.
    assert rss_after - rss_before < 8 * 1024 * 1024, (rss_before, rss_after)

    # After client_write_timeout without progress, the gateway hangs up and stops the provider.
    await asyncio.sleep(WRITE_TIMEOUT)
    for _ in range(100_000):
        try:
            piece = await asyncio.wait_for(reader.read(65536), 10)
        except ConnectionResetError:
            break
        if not piece:
            break
    writer.close()
    stats = await provider_stats(stack.provider_url)
    assert stats["chunks_sent"] < FLOOD_CHUNKS // 10
    for _ in range(100):
        if (await provider_stats(stack.provider_url))["streams_aborted"] >= 1:
            break
        await asyncio.sleep(0.1)
    assert (await provider_stats(stack.provider_url))["streams_aborted"] == 1, (
        await provider_stats(stack.provider_url),
        stack.gateway_logs()[-5:],
    )

    # Charged for what the provider generated, recorded as cancelled; the books add up.
    books = await read_books(stack.url, stack.admin_token, account_id, key)
    assert books.record_costs[generation_id] > 0
    assert problems(books, []) == []
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{stack.url}/api/v1/generation",
            params={"id": generation_id},
            headers=bearer(key),
        ) as resp,
    ):
        record = (await resp.json())["data"]
    assert record["cancelled"] is True


@pytest.fixture
async def trickle_client(redis_url: str, provider: ThreadedServer) -> TestClient:
    app = create_app(
        make_settings(
            redis_url,
            provider.url,
            upstream_total_timeout=1.5,
            upstream_read_timeout=30,
            stream_keepalive_seconds=0.5,
        )
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def test_a_provider_that_trickles_forever_is_cut_off(trickle_client: TestClient) -> None:
    client = trickle_client
    account_id, key = await new_account(client, purchase="1.00")
    started = time.monotonic()
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/trickle"), headers=bearer(key)
    )
    assert resp.status == 408
    assert (await resp.json())["error"]["code"] == 408
    assert time.monotonic() - started < 5

    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/trickle", stream=True), headers=bearer(key)
    )
    assert resp.status == 200
    text = (await resp.read()).decode()
    assert "timed out" in text, text[-500:]
    assert text.count("keep-alive") < 5  # cut off at once, not after a burst of keep-alives
    assert text.rstrip().endswith("data: [DONE]")
    assert time.monotonic() - started < 10

    state = await account_state(client, account_id)
    assert state["reserved"] == "0.00"
    assert Decimal(state["total_usage"]) == 0  # nothing was generated, nothing is charged


async def _read_until_closed(reader: asyncio.StreamReader, bound: float) -> bytes:
    """Everything the server sends until it closes the connection (bounded)."""
    answer = b""
    deadline = time.monotonic() + bound
    while (left := deadline - time.monotonic()) > 0:
        try:
            piece = await asyncio.wait_for(reader.read(65536), left)
        except (ConnectionError, TimeoutError):
            break
        if not piece:
            break
        answer += piece
    return answer


async def test_a_request_head_that_trickles_in_is_cut_off(
    redis_url: str, provider: ThreadedServer
) -> None:
    """Slowloris: a client that sends its request head a byte at a time holds a connection for
    `client_idle_timeout` at most (aiohttp's own default is an hour), as does an idle one."""
    app = create_app(make_settings(redis_url, provider.url, client_idle_timeout=1.0))
    runner, port = await start_site(app, "127.0.0.1", 0)
    try:
        for trickle in (b"POST /api/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n", b""):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.monotonic()
            for byte in trickle:  # one byte every 0.05 s: the head is never done within 1 s
                if writer.is_closing() or reader.at_eof():
                    break
                writer.write(bytes([byte]))
                await asyncio.sleep(0.05)
            closed = await _read_until_closed(reader, 10.0)
            elapsed = time.monotonic() - started
            writer.close()
            assert closed == b"" and reader.at_eof()  # closed without an answer
            assert 0.9 < elapsed < 5.0, elapsed
    finally:
        await runner.cleanup()


async def test_a_body_that_trickles_in_is_a_408_and_admits_nothing(
    redis_url: str, provider: ThreadedServer
) -> None:
    app = create_app(make_settings(redis_url, provider.url, client_read_timeout=0.5))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        account_id, key = await new_account(client, purchase="1.00")
        body = orjson.dumps(chat("test/paid"))
        head = (
            b"POST /api/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nAuthorization: Bearer " + key.encode() + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
        started = time.monotonic()
        writer.write(head + body[:10])  # and never the rest
        answer_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
        assert answer_head.startswith(b"HTTP/1.1 408"), answer_head
        length = int(answer_head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        error = orjson.loads(await asyncio.wait_for(reader.readexactly(length), 10.0))["error"]
        assert time.monotonic() - started < 5.0
        writer.close()
        assert error["metadata"]["error_type"] == "timeout"
        assert "did not arrive within 0.5 s" in error["message"]
        state = await account_state(client, account_id)
        assert state["reserved"] == "0.00" and state["balance"] == "1.00"


async def _open_hold_stream(
    redis_url: str, provider_url: str, **settings: float
) -> tuple[TestClient, aiohttp.ClientResponse]:
    """A stream of the simulated provider's `sim-hold`: one event a second."""
    client = TestClient(TestServer(create_app(make_settings(redis_url, provider_url, **settings))))
    await client.start_server()
    _, key = await new_account(client, purchase="1.00")
    resp = await client.post(
        "/api/v1/chat/completions", json=chat("test/hold", stream=True), headers=bearer(key)
    )
    assert resp.status == 200
    return client, resp


async def test_a_quiet_provider_gets_the_client_keep_alives_between_events(
    redis_url: str, provider: ThreadedServer
) -> None:
    """Each `stream_keepalive_seconds` of silence sends a comment, so proxies on the way keep
    the stream open; the events still come through."""
    client, resp = await _open_hold_stream(
        redis_url, provider.url, stream_keepalive_seconds=0.3, upstream_read_timeout=5
    )
    try:
        seen = b""
        async with asyncio.timeout(10):
            while seen.count(b"data: ") < 3:
                seen += await resp.content.readany()
        assert seen.count(b": keep-alive") >= 4, seen  # two silent seconds, three each
    finally:
        resp.close()
        await client.close()


async def test_a_provider_silent_past_the_read_timeout_ends_the_stream(
    redis_url: str, provider: ThreadedServer
) -> None:
    client, resp = await _open_hold_stream(
        redis_url, provider.url, stream_keepalive_seconds=0.2, upstream_read_timeout=0.5
    )
    try:
        started = time.monotonic()
        async with asyncio.timeout(10):
            text = (await resp.read()).decode()
        assert "timed out" in text and text.rstrip().endswith("data: [DONE]"), text[-300:]
        assert time.monotonic() - started < 3
    finally:
        await client.close()


async def test_a_stream_whose_client_hung_up_leaves_nothing_behind(
    redis_url: str, provider: ThreadedServer
) -> None:
    """Its write watch is gone with it: a timer left until the write timeout would keep the
    request, the answer and the settlement alive that long, for every stream that ends so."""
    client, resp = await _open_hold_stream(redis_url, provider.url, client_write_timeout=60)
    try:
        async with asyncio.timeout(10):
            await resp.content.readany()  # the first event
        resp.close()  # the client hangs up
        for _ in range(50):  # the gateway notices at its next write, within about a second
            await asyncio.sleep(0.1)
            gc.collect()
            if not any(isinstance(o, ClientWrites) for o in gc.get_objects()):
                break
        assert not any(isinstance(o, ClientWrites) for o in gc.get_objects())
    finally:
        await client.close()
