"""A lease's slices of rate-limit windows: requests (or tokens) counted in Redis ahead, admitted
here.

Which counters a request counts against, how much it takes of each (1 request, or its worst
case in tokens) and how much a window allows are the rate limiter's business (its Lua hooks take
the slices, see ratelimit/lua/limits.lua); here a counter is only a key with an amount still ours
to admit, the window's count as last seen, and its limit. What is left of a slice goes back to its
window at the next renewal or when the lease is given back (a window that ended takes nothing
back); what a request took is its own, trued up by its settlement.
"""

from collections.abc import Iterable, Sequence
from typing import Any


class CounterSlices:
    __slots__ = ("_slices",)

    def __init__(self) -> None:
        self._slices: dict[str, list[int]] = {}  # key -> [still ours, count, limit, taken from]

    def covers(self, counters: Sequence[str], takes: Sequence[int] = ()) -> bool:
        """Each slice still holds what the request takes of it (`takes`: 1 each by default)."""
        slices = self._slices
        for i, key in enumerate(counters):
            held = slices.get(key)
            if held is None or held[0] < (takes[i] if takes else 1):
                return False
        return True

    def take(self, counters: Sequence[str], takes: Sequence[int] = ()) -> tuple[int, ...]:
        """What the request takes of each (after `covers`): {count, limit, ...} as the admission
        script answers them, the count this request's own."""
        counts: list[int] = []
        for i, key in enumerate(counters):
            amount = takes[i] if takes else 1
            held = self._slices[key]
            held[0] -= amount
            held[1] += amount
            held[3] = 1
            counts += (held[1], held[2])
        return tuple(counts)

    def give_back(self, counters: Iterable[str] | None = None) -> tuple[list[str], list[int]]:
        """The unused part of these slices (all, by default), forgotten here: the counters' keys
        and how many each gives back."""
        keys = (
            list(self._slices) if counters is None else [k for k in counters if k in self._slices]
        )
        backs = [self._slices.pop(key)[0] for key in keys]
        return keys, backs

    def granted(self, counters: Sequence[str], reply: Sequence[Any]) -> None:
        """Slices taken by a renewal ({count before, limit, taken, ...} in the counters' order)."""
        for i, key in enumerate(counters):
            count, limit, taken = (int(v) for v in reply[3 * i : 3 * i + 3])
            self._slices[key] = [taken, count, limit, 0]

    def __bool__(self) -> bool:
        return bool(self._slices)
