"""Credits expire `credit_expiry_days` after their purchase (0: never): a background pass, under a
Redis lease so that one of several gateway processes runs it at a time."""

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.state import CLOCK, SERVICES, SETTINGS
from gateway.tasks.background import stop_task
from metering.money import format_usd
from metering.transport.client import STORE_ERRORS

log = logging.getLogger("gateway.expiry")
SECONDS_PER_DAY = 86_400


async def sweep_once(app: web.Application) -> int | None:
    settings = app[SETTINGS]
    if not settings.credit_expiry_days:
        return 0
    expired = await app[SERVICES].ledger.sweep(
        app[CLOCK].now(),
        settings.credit_expiry_days * SECONDS_PER_DAY,
        lease_seconds=settings.expiry_sweep_seconds / 2,
    )
    if expired:
        log.info(
            "expired $%s of unused credits older than %g days",
            format_usd(expired),
            settings.credit_expiry_days,
        )
    return expired


async def expiry_sweeper(app: web.Application) -> AsyncIterator[None]:
    async def loop() -> None:
        while True:
            await asyncio.sleep(app[SETTINGS].expiry_sweep_seconds)
            try:
                await sweep_once(app)
            except STORE_ERRORS as exc:
                log.warning("credit expiry pass skipped: redis %s", type(exc).__name__)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        await stop_task(task)
