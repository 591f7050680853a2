"""The leases' upkeep: idle slices given back and long-held leases renewed, a few times a second
(see metering.leasing)."""

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.state import CLOCK, SERVICES
from gateway.tasks.background import stop_task

log = logging.getLogger("gateway.leases")


async def lease_keeper(app: web.Application) -> AsyncIterator[None]:
    leases = app[SERVICES].metering.leases
    task = None
    if leases.on:
        task = asyncio.create_task(_keep(app, leases.tick_every))
    try:
        yield
    finally:
        if task is not None:
            await stop_task(task)


async def _keep(app: web.Application, every: float) -> None:
    leases, clock = app[SERVICES].metering.leases, app[CLOCK]
    while True:
        await asyncio.sleep(every)
        try:
            await leases.tick(clock.now())
        except Exception:  # a bug must not end the upkeep: the next tick tries again
            log.exception("lease upkeep failed")
