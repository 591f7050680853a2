"""The files the gateway reloads while it runs: the rate limits (gateway.limits) and the catalog
in the config file (gateway.catalog). Each is read again on SIGHUP (`gateway serve` passes it on
to its workers) and when it changes on disk, checked every `limits_reload_seconds`."""

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from typing import Protocol

from aiohttp import web

from gateway.catalog import CATALOG
from gateway.limits import LIMITS
from gateway.state import SETTINGS
from gateway.tasks.background import stop_task


class Reloadable(Protocol):
    def reload(self) -> bool: ...

    def changed_on_disk(self) -> bool: ...


async def file_reloader(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: watch the files, and reload both on SIGHUP where this loop owns signals."""
    holders: tuple[Reloadable, ...] = (app[LIMITS], app[CATALOG])
    interval = app[SETTINGS].limits_reload_seconds
    loop = asyncio.get_running_loop()

    def reload_all() -> None:
        for holder in holders:
            holder.reload()

    hooked = False
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, reload_all)
        hooked = True

    async def watch() -> None:
        while True:
            await asyncio.sleep(interval)
            for holder in holders:
                if holder.changed_on_disk():
                    holder.reload()

    task = asyncio.create_task(watch())
    try:
        yield
    finally:
        await stop_task(task)
        if hooked:
            loop.remove_signal_handler(signal.SIGHUP)
