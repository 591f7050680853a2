"""One process's lease on one account: its slice, its tickets and the account's rate here (the
process's leases as a whole, and the module's story: leases.py)."""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from metering.leasing.counters import CounterSlices

WINDOW = 1.0  # seconds: the rate that turns leasing on is counted per window
MIN_RATE_WINDOW = 0.1  # seconds: a burst's rate is measured over at least this long


@dataclass(slots=True, eq=False)
class LeaseTicket:
    """One request admitted from a lease: settle it with `hold`, the lease's id in Redis."""

    lease: "AccountLease"
    term: int
    hold: str
    reserve: int
    counts: tuple[int, ...] = ()  # the rate-limit windows' counts, as admit.lua answers them
    open: bool = True  # until its settlement is applied (or given up on)

    def close(self) -> bool:
        """The lease stops covering this request (once): False when it already had."""
        if not self.open:
            return False
        self.open = False
        self.lease.in_flight -= self.reserve
        return True


class AccountLease:
    """This process's lease on one account, and the account's recent rate here."""

    __slots__ = (
        "account_id",
        "count",
        "counters",
        "dirty",
        "epoch",
        "fresh_until",
        "held",
        "hold",
        "in_flight",
        "keys",
        "last_count",
        "last_reserved",
        "recalled",
        "refused_keys",
        "renewed_at",
        "renewing",
        "reserved",
        "room",
        "short",
        "term",
        "used_at",
        "waiting",
        "waiting_requests",
        "window",
    )

    def __init__(self, account_id: str, now: float) -> None:
        self.account_id = account_id
        self.term = 0  # renewals so far; a ticket of an older term gives nothing back to `room`
        self.hold = ""  # the lease's id in Redis ('' while it holds nothing there)
        self.room = 0  # what the current term may still admit
        self.in_flight = 0  # what admitted requests may still cost (all terms), until settled
        self.held = 0  # what the lease holds in Redis, as far as this process knows
        self.dirty = False  # a renewal's outcome is unknown: Redis may hold an id of ours
        self.epoch = "0"
        self.fresh_until = 0.0
        self.short = False  # the last renewal granted less than asked: no other until fresh ends
        self.recalled = False
        self.keys: dict[str, float] = {}  # key hash -> admits until (checked by a renewal)
        self.refused_keys: dict[str, float] = {}  # key hash -> not leased until
        self.renewing: asyncio.Future[None] | None = None
        self.waiting = 0  # what the requests waiting for a renewal would reserve
        self.waiting_requests = 0
        self.counters = CounterSlices()  # slices of rate-limit windows
        self.renewed_at = 0.0
        self.used_at = now
        self.window = now
        self.count = 0
        self.reserved = 0
        self.last_count = 0
        self.last_reserved = 0

    def seen(self, reserve: int, now: float) -> None:
        """Count one leasable request in the rate windows."""
        if now - self.window >= WINDOW:
            fresh = now - self.window < 2 * WINDOW  # the window just ended: its count is the rate
            self.last_count = self.count if fresh else 0
            self.last_reserved = self.reserved if fresh else 0
            self.window, self.count, self.reserved = now, 0, 0
        self.count += 1
        self.reserved += reserve

    def rate(self, now: float) -> tuple[float, float]:
        """The account's requests here a second, and what they reserve: the last window's, or
        this one's so far when it is busier."""
        since = max(now - self.window, MIN_RATE_WINDOW)
        return (
            max(self.last_count / WINDOW, self.count / since),
            max(self.last_reserved / WINDOW, self.reserved / since),
        )

    def hot(self, above: float, now: float) -> bool:
        since = now - self.window
        if since >= 2 * WINDOW:
            return False
        recent = self.count if since >= WINDOW else max(self.count, self.last_count)
        return recent >= above * WINDOW

    def take(
        self,
        key_hash: str,
        reserve: int,
        now: float,
        counters: Sequence[str],
        takes: Sequence[int] = (),
    ) -> LeaseTicket | None:
        """`takes`: what the request takes of each counter (1 each when not given)."""
        if (
            self.recalled
            or self.renewing is not None  # what it holds is being counted: no ticket escapes it
            or now >= self.fresh_until
            or reserve > self.room
            or self.keys.get(key_hash, 0.0) <= now
            or (counters and not self.counters.covers(counters, takes))
        ):
            return None
        self.room -= reserve
        self.in_flight += reserve
        self.used_at = now
        counts = self.counters.take(counters, takes) if counters else ()
        return LeaseTicket(self, self.term, self.hold, reserve, counts)

    def idle(self, now: float, seconds: float) -> bool:
        return now - self.used_at >= seconds

    def unknown(self, until: float) -> None:
        """A renewal whose outcome is unknown: nothing is admitted from the lease until one that
        answers (the upkeep's, at the latest) drops whatever ids of ours Redis holds."""
        self.dirty = True
        self.hold, self.room, self.held, self.short = "", 0, 0, True
        self.term += 1
        self.fresh_until = until
