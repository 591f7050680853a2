"""Memory given back after a burst of requests (issue 26).

A burst of thousands of streams leaves the process's memory in free lists: CPython's small-object
arenas that still hold a few live objects, and glibc's heap, which keeps freed memory for reuse
instead of returning it to the system. Reused it is (a second burst of the same size costs no
more), but an operator sees the peak stay. So once the process has served no request for
IDLE_SECONDS after a busy spell, it collects garbage cycles and asks glibc to return what it can
(malloc_trim). That takes tens of milliseconds, which is why it waits for a quiet moment: no
request is under way to feel it. Where there is no glibc (musl, macOS), it only collects.
"""

import asyncio
import ctypes
import ctypes.util
import gc
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from gateway.state import SERVING
from gateway.tasks.background import stop_task

log = logging.getLogger("gateway.memory")
LOOK_EVERY_SECONDS = 1.0
IDLE_SECONDS = 5.0
BUSY_REQUESTS = 100  # a spell with this many requests at once is a burst worth trimming after


def _malloc_trim() -> Callable[[], int] | None:
    try:
        libc = ctypes.CDLL("libc.so.6")  # glibc's name: no ldconfig run to find it
    except OSError:
        name = ctypes.util.find_library("c")
        if name is None:
            return None
        try:
            libc = ctypes.CDLL(name)
        except OSError:
            return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: int(trim(0))


class AfterBursts:
    """Watches how many requests are under way; after a burst and IDLE_SECONDS of none, trims."""

    def __init__(self, under_way: Callable[[], int]) -> None:
        self._under_way = under_way
        self._trim = _malloc_trim()
        self._peak = 0
        self._idle_for = 0.0
        self.trims = 0

    def look(self, elapsed: float) -> bool:
        """One look, `elapsed` seconds after the last; True when it trimmed."""
        now = self._under_way()
        self._peak = max(self._peak, now)
        if now:
            self._idle_for = 0.0
            return False
        self._idle_for += elapsed
        if self._peak < BUSY_REQUESTS or self._idle_for < IDLE_SECONDS:
            return False
        self._peak = 0
        gc.collect()
        if self._trim is not None:
            self._trim()
        self.trims += 1
        log.info("memory given back after a burst of requests")
        return True


async def memory_trimmer(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: memory given back after bursts, while the app runs."""
    serving = app[SERVING]
    after = AfterBursts(lambda: serving.count)

    async def loop() -> None:
        while True:
            await asyncio.sleep(LOOK_EVERY_SECONDS)
            after.look(LOOK_EVERY_SECONDS)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        await stop_task(task)
