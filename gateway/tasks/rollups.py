"""The Activity rollups' background fold: the accounts this process settled, counted into the
rollups twice a second (see metering.rollup_fold)."""

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.state import SERVICES
from gateway.tasks.background import stop_task

FOLD_INTERVAL = 0.5  # seconds: how far the rollups trail settlement while nobody reads them


async def rollup_folder(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[SERVICES].rollup_fold.run(FOLD_INTERVAL))
    try:
        yield
    finally:
        await stop_task(task)
