"""The provider client (gateway/proxy/forward/provider_client.py) against a scripted provider on
loopback (tests/scripted_provider.py): every way a provider's answer can be framed, broken or left
hanging, and when a connection may carry the next request."""

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.proxy.forward.provider_client import ProviderPool
from gateway.proxy.forward.provider_connection import UpstreamBroken, UpstreamSilent
from tests.scripted_provider import Answer, ScriptedProvider, json_answer, read_all, sends

Make = Callable[..., Awaitable[tuple[ScriptedProvider, ProviderPool]]]


@pytest.fixture
async def scripted() -> AsyncIterator[Make]:
    made: list[tuple[ScriptedProvider, ProviderPool]] = []

    async def make(
        *answers: Answer, read_timeout: float = 5.0
    ) -> tuple[ScriptedProvider, ProviderPool]:
        provider = ScriptedProvider(list(answers))
        url = await provider.start()
        pool = ProviderPool(
            "sim",
            url,
            {"Content-Type": "application/json", "Authorization": "Bearer sk-test"},
            connect_timeout=2,
            read_timeout=read_timeout,
        )
        made.append((provider, pool))
        return provider, pool

    yield make
    for provider, pool in made:
        await pool.close()
        await provider.stop()


async def test_a_request_is_sent_whole_and_its_connection_kept_alive(scripted: Make) -> None:
    provider, pool = await scripted(sends(json_answer(b'{"a":1}')), sends(json_answer(b'{"b":2}')))
    assert await read_all(pool, b'{"q":1}') == (200, b'{"a":1}')
    assert await read_all(pool, b'{"q":2}') == (200, b'{"b":2}')
    assert provider.connections == 1
    first = provider.requests[0]
    assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:" in first
    assert b"\r\nAuthorization: Bearer sk-test\r\n" in first
    assert b"\r\nContent-Length: 7\r\n" in first
    assert first.endswith(b'\r\n\r\n{"q":1}')


async def test_connection_close_and_a_body_ending_with_the_connection_end_reuse(
    scripted: Make,
) -> None:
    provider, pool = await scripted(
        sends(json_answer(b"one", b"Connection: close\r\n")),
        sends(b"HTTP/1.1 200 OK\r\n\r\nuntil", b" the end", close=True),
        sends(json_answer(b"three")),
    )
    assert await read_all(pool) == (200, b"one")
    assert await read_all(pool) == (200, b"until the end")
    assert await read_all(pool) == (200, b"three")
    assert provider.connections == 3


async def test_a_chunked_stream_arrives_piece_by_piece(scripted: Make) -> None:
    go_on = asyncio.Event()

    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)  # the client is waiting for the body when its first piece comes
        writer.write(b"7\r\ndata: 1\r\n")
        await writer.drain()
        await go_on.wait()
        writer.write(b"7\r\ndata: 2\r\n0\r\n\r\n")

    provider, pool = await scripted(answer, sends(json_answer(b"next")))
    response = await pool.post("/chat/completions", b"{}")
    assert response.status == 200
    first = await asyncio.wait_for(response.readany(), 5)
    assert first == b"data: 1"  # before the provider sent the rest
    go_on.set()
    assert await response.readany() == b"data: 2"
    assert await response.readany() == b""
    response.release()
    assert await read_all(pool) == (200, b"next")
    assert provider.connections == 1


async def test_a_compressed_answer_is_decoded(scripted: Make) -> None:
    packed = gzip.compress(b'{"choices": []}')
    _, pool = await scripted(sends(json_answer(packed, b"Content-Encoding: gzip\r\n")))
    assert await read_all(pool) == (200, b'{"choices": []}')


async def test_an_idle_connection_the_provider_closed_is_not_used(scripted: Make) -> None:
    provider, pool = await scripted(
        sends(json_answer(b"first"), close=True), sends(json_answer(b"second"))
    )
    # Connection: close was not said, so the connection went back to the pool; then the
    # provider closed it while idle.
    assert await read_all(pool) == (200, b"first")
    await asyncio.sleep(0.1)
    assert await read_all(pool) == (200, b"second")
    assert provider.connections == 2


async def test_bytes_after_an_answer_leave_it_whole_but_end_its_connection(scripted: Make) -> None:
    provider, pool = await scripted(
        sends(json_answer(b"whole") + b"GARBAGE"), sends(json_answer(b"fresh"))
    )
    assert await read_all(pool) == (200, b"whole")
    assert await read_all(pool) == (200, b"fresh")
    assert provider.connections == 2


@pytest.mark.parametrize(
    ("answer", "before_head"),
    [
        (sends(b"", close=True), True),  # closed without a word
        (sends(b"HTTP/1.1 200 OK\r\nContent-Le", close=True), True),
        (sends(b"NOT HTTP AT ALL\r\n\r\n"), True),
        (sends(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", close=True), False),
        (sends(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", close=True), False),
        (sends(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nXYZ\r\n"), False),
        (sends(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"), True),  # bare LF line ends
        (sends(b"HTTP/1.1 429 No\r\nRetry-After: 1\nX-Smuggled: yes\r\n\r\n"), True),
        (sends(b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nok"), True),
        (sends(json_answer(b"not gzip at all", b"Content-Encoding: gzip\r\n")), False),
        (
            sends(json_answer(gzip.compress(b"{}") + b"trailing", b"Content-Encoding: gzip\r\n")),
            False,
        ),
    ],
)
async def test_a_broken_answer_is_an_upstream_failure(
    scripted: Make, answer: Answer, before_head: bool
) -> None:
    provider, pool = await scripted(answer, sends(json_answer(b"after")))
    if before_head:
        with pytest.raises(UpstreamBroken) as failure:
            await pool.post("/chat/completions", b"{}")
    else:
        with pytest.raises(UpstreamBroken) as failure:
            await read_all(pool)
    assert failure.value.kind == "protocol"
    assert await read_all(pool) == (200, b"after")  # a new connection, not the broken one
    assert provider.connections == 2


async def test_a_silent_provider_times_out_before_and_after_its_head(scripted: Make) -> None:
    _, pool = await scripted(
        sends(b""),  # never answers
        sends(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"),  # stops mid-body
        read_timeout=0.3,
    )
    with pytest.raises(UpstreamSilent) as silent:
        await pool.post("/chat/completions", b"{}")
    assert silent.value.kind == "timeout"
    assert isinstance(silent.value, TimeoutError)
    response = await pool.post("/chat/completions", b"{}")
    assert await response.readany() == b"half"
    with pytest.raises(TimeoutError):
        await response.readany()
    response.release()


async def test_an_unreachable_provider_is_a_connect_failure() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    pool = ProviderPool("gone", f"http://127.0.0.1:{port}", {}, connect_timeout=2, read_timeout=2)
    with pytest.raises(UpstreamBroken) as failure:
        await pool.post("/chat/completions", b"{}")
    assert failure.value.kind == "connect"
    assert "sk-" not in str(failure.value)


async def test_a_cancelled_request_closes_its_connection(scripted: Make) -> None:
    provider, pool = await scripted(sends(b""), sends(json_answer(b"later")))
    waiting = asyncio.create_task(pool.post("/chat/completions", b"{}"))
    await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await read_all(pool) == (200, b"later")
    assert provider.connections == 2


async def test_a_gzip_body_of_several_members_is_decoded_whole(scripted: Make) -> None:
    packed = gzip.compress(b'{"a": ') + gzip.compress(b"1}")
    _, pool = await scripted(sends(json_answer(packed, b"Content-Encoding: gzip\r\n")))
    assert await read_all(pool) == (200, b'{"a": 1}')


def test_a_header_value_with_a_line_break_is_refused_without_quoting_it() -> None:
    async def make() -> None:
        ProviderPool(
            "sim",
            "http://127.0.0.1:9/v1",
            {"Authorization": "Bearer sk-secret\n"},
            connect_timeout=1,
            read_timeout=1,
        )

    with pytest.raises(ValueError, match="Authorization") as refused:
        asyncio.run(make())
    assert "sk-secret" not in str(refused.value)
