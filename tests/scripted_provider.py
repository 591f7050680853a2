"""A scripted provider on loopback for the provider client's tests: a real socket server
(plain or TLS) that answers the n-th request, over all its connections, with exactly the bytes
`answers[n]` writes, and counts the connections (for TLS, those whose handshake completed)."""

import asyncio
import ssl
from collections.abc import Awaitable, Callable

from gateway.proxy.forward.provider_client import ProviderPool

Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]
WAIT = 5.0  # seconds: the bound on every wait, all on loopback


class ScriptedProvider:
    def __init__(self, answers: list[Answer], tls: ssl.SSLContext | None = None) -> None:
        self.answers = answers
        self.tls = tls
        self.requests: list[bytes] = []
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                await self.answers[len(self.requests) - 1](writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, OSError):  # ssl.SSLError is an OSError
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self._writers:
            writer.transport.abort()  # a handler still waiting on its test ends too
        await asyncio.wait_for(self.server.wait_closed(), WAIT)


def sends(*parts: bytes, close: bool = False, pause: float = 0.0) -> Answer:
    async def answer(writer: asyncio.StreamWriter) -> None:
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(pause)
        if close:
            writer.close()

    return answer


def json_answer(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body


async def read_all(pool: ProviderPool, body: bytes = b"{}") -> tuple[int, bytes]:
    """POST, then the whole answer: (status, body)."""
    response = await asyncio.wait_for(pool.post("/chat/completions", body), WAIT)
    try:
        out = b""
        for _ in range(1000):
            piece = await asyncio.wait_for(response.readany(), WAIT)
            if not piece:
                return response.status, out
            out += piece
        raise AssertionError("the answer did not end")
    finally:
        response.release()
