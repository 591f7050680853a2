"""Opening a connection to a provider: its name resolved off the event loop, then every address
it resolves to tried with happy eyeballs (RFC 8305: the next address 250 ms after the last
began, alternating IPv6 and IPv4), all within the connect timeout. A name whose first address is
dead (broken IPv6, one bad address among several) connects through the next one in a quarter of
a second, instead of waiting the whole connect timeout for the dead one.
"""

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiohappyeyeballs

AddrInfo = tuple[Any, Any, int, str, tuple[Any, ...]]
Resolver = Callable[[str, int], Awaitable[list[AddrInfo]]]
HAPPY_EYEBALLS_DELAY = 0.25  # seconds, RFC 8305's recommended Connection Attempt Delay


async def resolve_by_system(host: str, port: int) -> list[AddrInfo]:
    """getaddrinfo in the loop's executor (asyncio's and uvloop's both), never on the loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(infos)


async def dial(
    factory: Callable[[], asyncio.Protocol],
    host: str,
    port: int,
    *,
    tls: ssl.SSLContext | None,
    resolve: Resolver,
) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
    """A connected transport (TLS when `tls`) to `host`:`port`; the caller bounds the time."""
    loop = asyncio.get_running_loop()
    infos = await resolve(host, port)
    if not infos:
        raise OSError(f"{host} resolves to no address")
    sock = await aiohappyeyeballs.start_connection(
        infos, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY, interleave=1, loop=loop
    )
    try:
        return await loop.create_connection(
            factory, sock=sock, ssl=tls, server_hostname=host if tls else None
        )
    except BaseException:
        sock.close()
        raise
