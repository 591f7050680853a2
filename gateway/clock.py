"""One injectable source of time: tests cross a UTC midnight or a minute edge without sleeping."""

import time


class Clock:
    def now(self) -> float:
        return time.time()


class ManualClock(Clock):
    """A clock that moves only when told to (tests)."""

    def __init__(self, start: float) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def set(self, when: float) -> None:
        self._now = when
