"""A small HTTP egress proxy on loopback for the tests: CONNECT tunnels (for https providers) and
requests in absolute form (for http ones), with Basic proxy authentication when it is given a
password, piping bytes both ways. It records what it was asked, so tests can see the gateway
went through it."""

import asyncio
import base64
import contextlib
from urllib.parse import urlsplit

WAIT = 5.0


class EgressProxyServer:
    def __init__(self, user: str = "", password: str = "") -> None:
        self.expected = (
            "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() if user else None
        )
        self.tunnels: list[str] = []  # CONNECT targets
        self.forwarded: list[str] = []  # absolute-form request targets
        self.refused = 0
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.wait_for(self.server.wait_closed(), WAIT)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            if self.expected is not None and self._authorization(head) != self.expected:
                self.refused += 1
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n")
                writer.write(b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                self.tunnels.append(target)
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                url = urlsplit(target)
                self.forwarded.append(target)
                assert url.hostname is not None and url.port is not None
                up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port)
                up_writer.write(head)
            await self._pipe(reader, writer, up_reader, up_writer)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            pass
        finally:
            writer.close()

    def _authorization(self, head: bytes) -> str | None:
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "proxy-authorization":
                return value.strip()
        return None

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        tasks = [
            asyncio.ensure_future(copy(reader, up_writer)),
            asyncio.ensure_future(copy(up_reader, writer)),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._tasks.difference_update(tasks)
