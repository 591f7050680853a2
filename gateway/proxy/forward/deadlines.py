"""The bound on a provider's whole answer (`upstream_total_timeout`), for every request in flight
at once: one sweep a second cancels the tasks that are past their deadline.

aiohttp's own `total` timeout puts a timer context around every read of every answer, and an
asyncio.timeout per request costs a timer and two coroutines: either was about 5% of the
gateway's time under load. Here a request costs a dict entry; a deadline fires up to one sweep
period late, which a bound of minutes does not notice.
"""

import asyncio
import contextlib
import logging

log = logging.getLogger("gateway.deadlines")

SWEEP_SECONDS = 1.0


class AnswerDeadlines:
    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds  # None: no bound
        self._due: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.seconds is not None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
            self._sweeper.add_done_callback(_sweeper_ended)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    def watch(self) -> float | None:
        """The current task's provider answer must be complete by the returned event-loop time
        (None: never); past it, the task is cancelled (see `took_too_long`)."""
        if self.seconds is None:
            return None
        task = asyncio.current_task()
        assert task is not None
        deadline = task.get_loop().time() + self.seconds
        self._due[task] = deadline
        return deadline

    def forget(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._due.pop(task, None)
            self._expired.discard(task)

    def took_too_long(self) -> bool:
        """Whether the cancellation the current task is handling came from its deadline alone;
        if so it is undone, and the caller raises a timeout instead. Another cancellation that
        came at the same time (a shutdown) still propagates."""
        task = asyncio.current_task()
        if task is None or task not in self._expired:
            return False
        self._expired.discard(task)
        self._due.pop(task, None)
        return task.uncancel() == 0

    async def _sweep(self) -> None:
        assert self.seconds is not None
        period = min(SWEEP_SECONDS, self.seconds / 4)
        loop = asyncio.get_running_loop()
        while True:  # until stop() cancels it
            await asyncio.sleep(period)
            now = loop.time()
            overdue = [
                t
                for t, due in self._due.items()
                if due <= now and t not in self._expired and not t.cancelling()
            ]
            for task in overdue:
                self._expired.add(task)
                task.cancel()


def _sweeper_ended(task: "asyncio.Task[None]") -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the answer-deadline sweeper stopped: %r", task.exception())
