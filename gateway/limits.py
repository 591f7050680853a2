"""The rate-limit policy in force, and its reload: on SIGHUP and when the file changes on disk.

A bad file is refused with one log line and the previous limits stay in force. The admission
script takes the limits as arguments, so a reload needs no script change.
"""

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from config.errors import ConfigError
from config.limits import load_limits
from gateway.state import SETTINGS
from gateway.tasks.background import stop_task
from ratelimit.policy import Policy

log = logging.getLogger("gateway.limits")


class LimitsHolder:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.policy = Policy(load_limits(path))  # a bad file at start-up is a ConfigError
        self._mtime = self._stat()

    def _stat(self) -> float | None:
        if self.path is None:
            return None
        try:
            return self.path.stat().st_mtime_ns / 1e9
        except OSError:
            return None

    def reload(self) -> bool:
        """Load the file again; keep the limits in force when it is bad. True when replaced."""
        self._mtime = self._stat()
        try:
            policy = Policy(load_limits(self.path))
        except ConfigError as exc:
            problems = "; ".join(str(p) for p in exc.problems)
            log.error("rate-limit file refused, previous limits stay in force: %s", problems)
            return False
        self.policy = policy
        names = ", ".join(c.name for c in policy.limits) or "none"
        log.info("rate limits loaded from %s: %s", self.path or "the shipped default", names)
        return True

    def changed_on_disk(self) -> bool:
        return self.path is not None and self._stat() != self._mtime


LIMITS = web.AppKey("limits", LimitsHolder)


async def limits_reloader(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: watch the file, and reload on SIGHUP where this loop owns signals."""
    holder = app[LIMITS]
    interval = app[SETTINGS].limits_reload_seconds
    loop = asyncio.get_running_loop()
    hooked = False
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, holder.reload)
        hooked = True

    async def watch() -> None:
        while True:
            await asyncio.sleep(interval)
            if holder.changed_on_disk():
                holder.reload()

    task = asyncio.create_task(watch()) if holder.path is not None else None
    try:
        yield
    finally:
        if task is not None:
            await stop_task(task)
        if hooked:
            loop.remove_signal_handler(signal.SIGHUP)
