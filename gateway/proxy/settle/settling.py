"""Settlements whose reply from Redis is still on its way.

A completion is answered once its settlement is handed to the kernel on a Redis connection that
has answered before (so it reaches Redis even if this process dies at once), or once it is done
(applied, or journaled when Redis is away); not once Redis has replied. The reply costs the client
a round trip and tells it nothing: the cost it is told is computed before.

Reads stay exact within a process: a GET waits for the settlements still out when it arrives
(`settle_before_reading`), so credits, keys, activity, generations and metrics read settled books.
With several workers, a read that another worker serves is not held back: it sees the charge once
Redis has run the settlement, normally within a millisecond of the answer but not guaranteed before
it.
On the way out, the gateway waits (bounded) for every settlement before it closes its Redis
connections; one cut off even so is journaled and replayed at the next start.
"""

import asyncio
import time
from typing import Any

from aiohttp import web


class Settling:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()  # replies from Redis still to come

    def __len__(self) -> int:
        return len(self._tasks)

    def add(self, task: "asyncio.Future[Any]") -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self, timeout: float) -> None:
        """Until the settlements out now are done (later ones are not waited for)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def drain(self, timeout: float) -> None:
        """Until none is out (new ones included: handlers still finishing), or `timeout`."""
        deadline = time.monotonic() + timeout
        while self._tasks and (left := deadline - time.monotonic()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)


SETTLING = web.AppKey("settling", Settling)


async def settle_before_reading(request: web.Request) -> None:
    """A GET that reads the books waits (bounded) for the settlements out when it arrives."""
    if request.method == "GET" and _reads_books(request.path):
        settling = request.app[SETTLING]
        if settling:
            await settling.wait(SETTLED_READ_WAIT_SECONDS)


def _reads_books(path: str) -> bool:
    """Probes, documents and the Activity page's files read no books (a liveness probe must
    never wait on Redis)."""
    return path not in _NO_BOOKS and not path.startswith("/activity")


_NO_BOOKS = frozenset({"/healthz", "/readyz", "/openapi.json", "/api/v1/models", "/v1/models"})
# A settlement ends within its own bounds (its batch's, then the journal's fsync); a read waits no
# longer than this in any case.
SETTLED_READ_WAIT_SECONDS = 5.0
