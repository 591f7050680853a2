"""Leased admission for busy accounts: one round trip per account a second, not one a request.

Above `above_per_second` leasable requests a second on one account (paid, by a key without a
credit limit; counted in this process), the process takes a lease (lua/lease.lua): a slice of
what the account can spend, reserved in Redis under an id of its own, with slices of the windows
of the rate limits its requests count against (counters.py), and admits that account's requests
against them without a round trip. An admission takes its worst case from the slice; a
settlement draws the cost from the lease in Redis (settle.lua) and gives the slice back what was
reserved beyond it. What the process admits never exceeds the lease, and the lease is reserved,
so nothing anywhere can spend it twice: no overspend, however many processes lease one account
(the way telecom credit control grants quota).

A lease admits for `seconds` after it was taken; the next request then renews it (one round trip
that also checks the asking key again). A settlement's reply carries the account's lease epoch,
which a key change, a purchase, a limit override or a refund moves: the process then gives its
slice back at once. A lease nothing was taken from for IDLE_SECONDS is given back by `tick()`;
one of a process that died expires as its reservations do (reservation timeout).
"""

import asyncio
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from metering.layout import AccountKeys
from metering.leasing.lease import AccountLease, LeaseTicket
from metering.scripts import Scripts
from metering.transport.client import STORE_ERRORS

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

log = logging.getLogger("metering.leases")
RunScript = Callable[["AsyncScript", list[str], list[Any]], Awaitable[Any]]
KEY_REFUSALS = frozenset({"no_key", "disabled", "expired", "management_key", "key_limit"})
SLICE_RESERVES = 8  # a new slice holds at least this many of the asking request's worst case
IDLE_SECONDS = 0.2  # a lease unused this long (or `seconds`, if shorter) is given back
RENEWALS_WAITED = 3  # a request waits for at most this many renewals before going the usual way


@dataclass(frozen=True, slots=True)
class LimitInputs:
    """The rate-limit hooks' keys and arguments for one request (see admit.lua), which of the
    keys are its windows' counters, and what it takes of each (1 each when not given)."""

    keys: Sequence[str] = ()
    args: Sequence[str | int] = (0,)
    counters: Sequence[str] = ()
    takes: Sequence[int] = ()


NO_LIMITS = LimitInputs()


@dataclass(frozen=True, slots=True)
class Want:
    """What a renewal asks for: credit, and requests of each rate-limit window."""

    credit: int
    requests: int = 0


GIVE_BACK = Want(0)


class Leases:
    """The leases of one gateway process (see the module's docstring)."""

    def __init__(
        self,
        scripts: Scripts,
        run: RunScript,
        *,
        above_per_second: float,
        seconds: float,
        reservation_timeout: float,
    ) -> None:
        self._scripts = scripts
        self._run = run
        self._above = above_per_second
        self._seconds = seconds
        self._expiry_ms = int(reservation_timeout * 1000)
        self._reservation_timeout = reservation_timeout
        self._prefix = f"lease-{secrets.token_hex(4)}-"  # this process's lease ids
        self._idle = min(IDLE_SECONDS, seconds)
        self._terms = itertools.count(1)
        self._by_account: dict[str, AccountLease] = {}
        self._background: set[asyncio.Future[None]] = set()

    @property
    def on(self) -> bool:
        return self._above > 0

    @property
    def tick_every(self) -> float:
        """How often `tick` should run: an idle lease goes back within twice this."""
        return self._idle / 2

    def lease_of(self, account_id: str) -> AccountLease | None:
        return self._by_account.get(account_id)

    async def admit(
        self, account_id: str, key_hash: str, reserve: int, now: float, limits: LimitInputs
    ) -> LeaseTicket | None:
        """A ticket when the account's lease admits the request; None: admit it the usual way
        (the account is not busy here, the lease or its windows cannot cover it, or the key is
        not leased). `limits`: the rate-limit windows it counts against."""
        lease = self._by_account.get(account_id)
        if lease is None:
            lease = self._by_account[account_id] = AccountLease(account_id, now)
        lease.seen(reserve, now)
        counters = limits.counters
        for _ in range(RENEWALS_WAITED):
            if lease.renewing is not None:
                lease.waiting += reserve  # the next renewal asks for these too
                lease.waiting_requests += 1
                try:
                    await asyncio.shield(lease.renewing)
                finally:
                    lease.waiting -= reserve
                    lease.waiting_requests -= 1
            ticket = lease.take(key_hash, reserve, now, counters, limits.takes)
            if ticket is not None or not lease.hot(self._above, now):
                return ticket
            if lease.refused_keys.get(key_hash, 0.0) > now or (
                lease.short and now < lease.fresh_until
            ):
                return None
            if lease.renewing is None:
                requests, reserves = lease.rate(now)
                want = Want(
                    max(
                        SLICE_RESERVES * reserve,
                        int(reserves * self._seconds),
                        lease.waiting + reserve,
                    ),
                    max(SLICE_RESERVES, int(requests * self._seconds), lease.waiting_requests + 1),
                )
                try:
                    await self._renew(lease, now, key_hash, want, limits)
                except STORE_ERRORS:
                    return None  # the usual admission says what is wrong with Redis
                return lease.take(key_hash, reserve, now, counters, limits.takes)
        return None

    def settled(self, ticket: LeaseTicket, cost: int, epoch: str, now: float) -> None:
        """The settlement of a leased request was answered: `cost` was drawn from its lease (a
        duplicate's was drawn the first time, or never: then the slice is smaller than it
        could be until the next renewal, never larger)."""
        if not ticket.close():
            return
        lease = ticket.lease
        if ticket.term == lease.term:
            lease.room += ticket.reserve - cost
            lease.held -= min(lease.held, cost)
        if epoch != lease.epoch and not lease.recalled:
            self._recall(lease, now)

    async def tick(self, now: float) -> None:
        """Give back idle leases' slices (keeping what their requests in flight may cost, their
        expiry pushed back), and forget accounts that are quiet here."""
        for account_id, lease in list(self._by_account.items()):
            if lease.renewing is None and self._due(lease, now):
                await self._give_back(lease, now)
            quiet = lease.idle(now, self._idle) and not lease.hot(self._above, now)
            if quiet and not (lease.hold or lease.dirty or lease.in_flight or lease.counters):
                del self._by_account[account_id]

    def _due(self, lease: AccountLease, now: float) -> bool:
        """The lease should go back to what is in flight: it sits idle holding more, its
        expiry needs pushing back for long requests, or a renewal's outcome is unknown."""
        if lease.dirty:
            return True
        if not (lease.hold or lease.counters):  # slices go back even with no credit held
            return False
        holds_more = lease.held > lease.in_flight or not lease.in_flight or bool(lease.counters)
        if lease.idle(now, self._idle) and holds_more:
            return True
        return lease.in_flight > 0 and now - lease.renewed_at >= self._reservation_timeout / 3

    async def close(self, now: float) -> None:
        """Give every lease back (what requests still in flight may cost stays reserved)."""
        for lease in list(self._by_account.values()):
            if lease.renewing is not None:
                await asyncio.shield(lease.renewing)
            if lease.hold or lease.dirty or lease.counters:
                await self._give_back(lease, now)
        if self._background:
            await asyncio.wait(set(self._background))

    def _recall(self, lease: AccountLease, now: float) -> None:
        """The account's epoch moved (a key changed, a refund wants leased credit): no more
        admissions from this lease; its slice goes back now."""
        lease.recalled = True
        lease.keys.clear()
        lease.refused_keys.clear()
        if lease.renewing is None:
            task = asyncio.ensure_future(self._give_back(lease, now))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _give_back(self, lease: AccountLease, now: float) -> None:
        try:
            await self._renew(lease, now, "", GIVE_BACK)
        except STORE_ERRORS as exc:
            log.warning(
                "a lease of account %s could not be given back now (%s): the next renewal "
                "drops it, or it expires",
                lease.account_id,
                type(exc).__name__,
            )
        lease.fresh_until = 0.0  # the next request renews (and checks its key)

    async def _renew(
        self,
        lease: AccountLease,
        now: float,
        key_hash: str,
        want: Want,
        limits: LimitInputs = NO_LIMITS,
    ) -> None:
        """One lease.lua call: the process's lease moves to a new id holding what is in flight
        plus up to `want`, with slices of the asking request's rate-limit windows; the asking
        key (if any) is checked first. What is unused of the slices of those windows (of all,
        when giving back) goes back first."""
        while lease.renewing is not None:  # one renewal of a lease at a time
            await asyncio.shield(lease.renewing)
        renewing = lease.renewing = asyncio.get_running_loop().create_future()
        k = AccountKeys(lease.account_id)
        new = f"{self._prefix}{next(self._terms)}"
        now_ms = int(now * 1000)
        keep = lease.in_flight
        back, backs = lease.counters.give_back(limits.counters if key_hash else None)
        keys = [k.account, k.reservations, k.reservation_expiry, k.api_key(key_hash or "-")]
        keys += [k.leases, k.lease_terms, *back, *limits.keys]
        args: list[Any] = [now_ms, self._prefix, new, keep, want.credit, now_ms + self._expiry_ms]
        args += ["1" if key_hash else "0", len(back), *backs, want.requests, *limits.args]
        try:
            reply = await self._run(self._scripts.lease, keys, args)
        except BaseException:
            lease.unknown(now + self._seconds)
            raise
        finally:
            lease.renewing = None
            renewing.set_result(None)
        status, amount, epoch = str(reply[0]), int(reply[1]), str(reply[4])
        if status == "stale":  # this renewal was applied before (its reply lost), or overtaken
            lease.unknown(now + self._seconds)
            return
        if status in KEY_REFUSALS or status == "no_account":
            lease.refused_keys[key_hash] = now + self._seconds
            return
        moved = lease.term > 0 and epoch != lease.epoch
        lease.dirty = False
        lease.term += 1
        lease.hold = new if amount > 0 else ""
        lease.held = amount
        lease.room = amount - keep
        if reply[5]:
            lease.counters.granted(limits.counters, reply[5])
        uncovered = limits.counters and not lease.counters.covers(limits.counters, limits.takes)
        lease.short = status != "ok" or lease.room < want.credit or bool(uncovered)
        lease.epoch, lease.recalled = epoch, False
        lease.fresh_until = now + self._seconds
        lease.renewed_at = now
        if key_hash:
            lease.keys[key_hash] = lease.fresh_until
            if moved:  # a key, a limit or the balance changed since: everything is asked again
                self._recall(lease, now)
