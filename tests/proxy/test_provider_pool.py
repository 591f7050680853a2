"""The provider client's connections on real networks (issue 20): a name whose first address is
dead connects through the next within a second (happy eyeballs), idle connections close as the
provider's Keep-Alive hint says and by a timer, a stale kept-alive connection is retried once on
a fresh one (and only then), and at most `max_connections` are open, the rest waiting."""

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from prometheus_client import REGISTRY

from gateway.proxy.forward.provider_client import ProviderPool
from gateway.proxy.forward.provider_connection import UpstreamBroken, keep_alive_timeout
from gateway.proxy.forward.provider_dial import AddrInfo
from tests.scripted_provider import ScriptedProvider, json_answer, read_all, sends

HEADERS = {"Content-Type": "application/json"}


@pytest.fixture
def blackhole() -> Iterator[tuple[str, int]]:
    """An address on loopback that takes no connection: a listener whose one-place accept queue
    is full, so the kernel drops every further SYN and a connect hangs (like a dead route)."""
    server = socket.socket()
    server.bind(("127.0.0.2", 0))
    server.listen(0)
    address = server.getsockname()
    filler = socket.socket()
    filler.connect(address)
    try:
        yield address
    finally:
        filler.close()
        server.close()


@pytest.fixture
async def provider() -> AsyncIterator[ScriptedProvider]:
    answers = [sends(json_answer(b'{"n":%d}' % n)) for n in range(20)]
    scripted = ScriptedProvider(answers)
    await scripted.start()
    yield scripted
    await scripted.stop()


def _port(provider: ScriptedProvider) -> int:
    assert provider.server is not None
    port: int = provider.server.sockets[0].getsockname()[1]
    return port


async def test_a_dead_first_address_is_passed_over_within_a_second(
    blackhole: tuple[str, int], provider: ScriptedProvider
) -> None:
    live = ("127.0.0.1", _port(provider))

    async def two_addresses(host: str, port: int) -> list[AddrInfo]:
        assert host == "provider.test"
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", blackhole),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", live),
        ]

    pool = ProviderPool(
        "eyeballs",
        "http://provider.test/v1",
        HEADERS,
        connect_timeout=10,
        read_timeout=5,
        resolve=two_addresses,
    )
    try:
        started = time.monotonic()
        assert await read_all(pool) == (200, b'{"n":0}')
        assert time.monotonic() - started < 1.0  # not the 10 s connect timeout
    finally:
        await pool.close()


def test_the_keep_alive_hint_is_read() -> None:
    assert keep_alive_timeout("timeout=5, max=100") == 5
    assert keep_alive_timeout("max=3,timeout=2") == 2
    assert keep_alive_timeout("timeout=x") is None and keep_alive_timeout(None) is None


async def test_an_idle_connection_closes_by_the_providers_hint_without_another_request() -> None:
    hinted = json_answer(b"{}", b"Keep-Alive: timeout=2\r\n")
    provider = ScriptedProvider([sends(hinted), sends(hinted)])
    url = await provider.start()
    pool = ProviderPool("hint", url, HEADERS, connect_timeout=2, read_timeout=5)
    try:
        assert await read_all(pool) == (200, b"{}")
        assert pool.idle_count == 1
        await asyncio.sleep(1.7)  # past a second less than the provider's two, and a sweep
        assert pool.idle_count == 0 and pool.open_count == 0  # closed by the pool's sweep
        assert await read_all(pool) == (200, b"{}")
        assert provider.connections == 2
    finally:
        await pool.close()
        await provider.stop()


async def test_a_stale_kept_alive_connection_is_retried_once_afresh() -> None:
    """The provider reads the second request and closes without a byte: the request goes out
    again on a new connection, and its answer is the client's."""
    provider = ScriptedProvider(
        [sends(json_answer(b"one")), sends(close=True), sends(json_answer(b"two"))]
    )
    url = await provider.start()
    pool = ProviderPool("stale", url, HEADERS, connect_timeout=2, read_timeout=5)
    try:
        assert await read_all(pool) == (200, b"one")
        assert await read_all(pool) == (200, b"two")
        assert provider.connections == 2 and len(provider.requests) == 3
    finally:
        await pool.close()
        await provider.stop()


async def _second_fails(provider: ScriptedProvider, *, pause: float = 0.0) -> None:
    url = await provider.start()
    pool = ProviderPool("noretry", url, HEADERS, connect_timeout=2, read_timeout=5)
    try:
        assert await read_all(pool) == (200, b"one")
        await asyncio.sleep(pause)
        with pytest.raises(UpstreamBroken) as broke:
            await read_all(pool)
        assert broke.value.kind == "protocol" and len(provider.requests) == 2
    finally:
        await pool.close()
        await provider.stop()


async def test_no_retry_once_some_of_the_answer_came() -> None:
    partial = sends(b"HTTP/1.1 200 OK\r\nContent-Le", close=True)
    await _second_fails(
        ScriptedProvider([sends(json_answer(b"one")), partial, sends(json_answer(b"never"))])
    )


async def test_no_retry_on_a_fresh_connection() -> None:
    """Connection: close ended the first: the second request's connection is new, and its
    closing without a byte is the provider's failure, not a stale keep-alive."""
    closing = sends(json_answer(b"one", b"Connection: close\r\n"))
    await _second_fails(
        ScriptedProvider([closing, sends(close=True), sends(json_answer(b"never"))])
    )


def _gauge(name: str, state: str) -> float | None:
    return REGISTRY.get_sample_value(
        "gateway_provider_connections", {"provider": name, "state": state}
    )


async def test_at_most_max_connections_are_open_and_the_rest_wait() -> None:
    slow = [sends(b"", json_answer(b"{}"), pause=0.3) for _ in range(6)]  # 0.3 s to answer
    provider = ScriptedProvider(slow)
    url = await provider.start()
    pool = ProviderPool(
        "capped", url, HEADERS, connect_timeout=5, read_timeout=5, max_connections=2
    )
    try:
        answers = await asyncio.gather(*(read_all(pool) for _ in range(6)))
        assert answers == [(200, b"{}")] * 6
        assert provider.connections == 2  # the waiting requests took the two in turn
        await asyncio.sleep(0.6)  # the gauges are set by the pool's sweep, not per request
        assert _gauge("capped", "open") == 2 and _gauge("capped", "idle") == 2
    finally:
        await pool.close()
        await provider.stop()


async def test_a_wait_for_a_connection_is_bounded() -> None:
    slow = [sends(b"", json_answer(b"{}"), pause=1.0) for _ in range(2)]  # 1 s to answer
    provider = ScriptedProvider(slow)
    url = await provider.start()
    pool = ProviderPool(
        "bounded", url, HEADERS, connect_timeout=0.3, read_timeout=5, max_connections=1
    )
    try:
        first = asyncio.ensure_future(read_all(pool))
        await asyncio.sleep(0.1)
        with pytest.raises(UpstreamBroken) as busy:
            await read_all(pool)
        assert busy.value.kind == "busy"
        assert await first == (200, b"{}")
        waits = REGISTRY.get_sample_value(
            "gateway_provider_connection_waits_total",
            {"provider": "bounded", "outcome": "timed_out"},
        )
        assert waits == 1
    finally:
        await pool.close()
        await provider.stop()
