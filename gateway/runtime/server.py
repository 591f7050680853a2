"""Run an aiohttp app until SIGINT or SIGTERM, with uvloop where the platform has it."""

import asyncio
import contextlib
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.runtime.malformed import GatewayRunner
from gateway.state import SETTINGS

Ready = Callable[[int], Awaitable[None]]


def install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def start_site(
    app: web.Application, host: str, port: int, *, reuse_port: bool = False
) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner and the port actually bound (for port 0)."""
    settings = app.get(SETTINGS)  # the simulated provider has none: aiohttp's defaults
    # keepalive_timeout also bounds a request head that trickles in: aiohttp closes a connection
    # that is still waiting for a whole request when it fires (its default is an hour).
    idle: dict[str, Any] = {"keepalive_timeout": settings.client_idle_timeout} if settings else {}
    runner = GatewayRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=10.0, **idle
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None, backlog=1024)
    await site.start()
    bound = port
    server = site._server  # aiohttp exposes no public accessor for the bound sockets
    if server is not None:
        for sock in getattr(server, "sockets", []) or []:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                bound = sock.getsockname()[1]
                break
    return runner, bound


async def serve_until_stopped(
    app: web.Application,
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    on_ready: Ready | None = None,
    side_app: tuple[web.Application, int] | None = None,
) -> None:
    """`side_app`: a second app on its own port (the metrics, when they have one)."""
    runner, bound = await start_site(app, host, port, reuse_port=reuse_port)
    side = None
    try:
        if side_app is not None:
            side, _ = await start_site(side_app[0], host, side_app[1], reuse_port=reuse_port)
        if on_ready is not None:
            await on_ready(bound)
        await wait_for_stop_signal()
    finally:
        if side is not None:
            await side.cleanup()
        await runner.cleanup()
