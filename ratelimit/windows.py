"""Fixed windows aligned to UTC: a minute starts at :00, a day at 00:00 UTC.

Epoch seconds are UTC without leap seconds, so a window is plain integer division: the window of
t = 1_795_793_095 (15:24:55 UTC) for a minute starts at 1_795_793_040 and resets at
1_795_793_100; for a day it starts at 1_795_737_600 (00:00 UTC) and resets 86,400 s later.
"""

from enum import StrEnum


class Unit(StrEnum):
    SECOND = "second"
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"

    @property
    def seconds(self) -> int:
        return _SECONDS[self._value_]  # by the plain string: an Enum member hashes in Python


_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86_400}


def window_start(unit: Unit, now: float) -> int:
    length = unit.seconds
    return int(now // length) * length


def window_reset(unit: Unit, now: float) -> int:
    """Epoch second at which the current window ends and its counter starts again from zero."""
    return window_start(unit, now) + unit.seconds


def seconds_until_reset(unit: Unit, now: float) -> int:
    """Whole seconds to wait (Retry-After), at least 1."""
    return max(1, -int(-(window_reset(unit, now) - now) // 1))
