"""Opening a connection to a provider: its name resolved off the event loop, then every address
it resolves to tried with happy eyeballs (RFC 8305: the next address 250 ms after the last
began, alternating IPv6 and IPv4), all within the connect timeout. A name whose first address is
dead (broken IPv6, one bad address among several) connects through the next one in a quarter of
a second, instead of waiting the whole connect timeout for the dead one. Through an egress proxy
(egress_proxy.py), the proxy is dialled so, and an https provider reached by a CONNECT tunnel.
"""

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiohappyeyeballs

from gateway.proxy.forward.egress_proxy import (
    EgressProxy,
    connect_request,
    tunnel_head,
    tunnel_status,
)

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
    proxy: EgressProxy | None = None,
) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
    """A connected transport (TLS when `tls`) to `host`:`port`, or to `proxy` (for an http
    provider) or through it (for an https one); the caller bounds the time."""
    if proxy is None:
        return await _direct(factory, host, port, tls, host, resolve)
    if tls is None:  # requests go to the proxy in absolute form (provider_client.py)
        return await _direct(factory, proxy.host, proxy.port, None, proxy.host, resolve)
    return await _tunnel(factory, host, port, tls, proxy, resolve)


async def _tunnel(
    factory: Callable[[], asyncio.Protocol],
    host: str,
    port: int,
    tls: ssl.SSLContext,
    proxy: EgressProxy,
    resolve: Resolver,
) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
    """CONNECT through the proxy, then TLS to the provider inside the tunnel."""
    loop = asyncio.get_running_loop()
    transport, head = await _direct(tunnel_head, proxy.host, proxy.port, None, "", resolve)
    try:
        transport.write(connect_request(proxy, host, port))  # type: ignore[attr-defined]
        status = tunnel_status(await head.answer)  # type: ignore[attr-defined]
        if status != 200:
            raise OSError(f"the proxy refused the tunnel ({status})")
        secured = await loop.start_tls(
            transport,  # type: ignore[arg-type]
            head,
            tls,
            server_hostname=host,
        )
        if secured is None:
            raise OSError("TLS could not start inside the tunnel")
    except BaseException:
        transport.close()
        raise
    protocol = factory()
    secured.set_protocol(protocol)
    protocol.connection_made(secured)
    return secured, protocol


async def _direct(
    factory: Callable[[], asyncio.Protocol],
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    server_hostname: str,
    resolve: Resolver,
) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
    loop = asyncio.get_running_loop()
    infos = await resolve(host, port)
    if not infos:
        raise OSError(f"{host} resolves to no address")
    sock = await aiohappyeyeballs.start_connection(
        infos, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY, interleave=1, loop=loop
    )
    try:
        return await loop.create_connection(
            factory, sock=sock, ssl=tls, server_hostname=server_hostname if tls else None
        )
    except BaseException:
        sock.close()
        raise
