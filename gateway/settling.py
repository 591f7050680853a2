"""Settlements whose reply from Redis is still on its way.

A completion is answered once its settlement is written to Redis (or journaled), not once Redis
has replied: the reply costs the client a round trip and tells it nothing (the cost it is told is
computed before). Redis runs commands in the order they arrive, and the answer leaves after the
settlement did, so a read that the client sends after its answer finds the charge. Within this
process a read does not rely on that: GET requests wait for the settlements still out when they
arrive (`settled_reads`), so credits, keys, activity, generations and metrics read settled books.
On the way out, the gateway waits for them all before it closes its Redis connections.
"""

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web


class Settling:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def add(self, task: "asyncio.Task[None]") -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self, timeout: float) -> None:
        """Until the settlements out now are done (later ones are not waited for)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)


SETTLING = web.AppKey("settling", Settling)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def settled_reads(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "GET":
        settling = request.app[SETTLING]
        if settling:
            await settling.wait(SETTLED_READ_WAIT_SECONDS)
    return await handler(request)


SETTLED_READ_WAIT_SECONDS = 5.0  # more than a settlement's own bound (its batch, then journal)
