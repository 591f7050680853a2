"""The credit ledger: every movement of credit as an entry you can audit, refunds and expiry.

Grants, purchases, refunds and expiries are entries of their own in a per-account stream; usage is
summarised per UTC day (the settlement script adds each request's cost to its day), so the ledger
stays small however many requests an account makes, and its entries still sum exactly to the
balance: balance = grants + purchases - refunds - expired - usage.
"""

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from metering.accounts import Purchase
from metering.layout import ACCOUNT_INDEX, OUTBOX_INDEX, AccountKeys
from metering.periods import rfc3339
from metering.scripts import Scripts
from metering.transport.client import AnyRedis

MS_PER_DAY = 86_400_000
EXPIRY_LEASE = "gw:expiry-lease"
# A refund whose credit is held waits this long for it: busy gateways give their leased slices
# back as soon as they see the recall (metering.leasing), requests in flight as they settle.
REFUND_WAIT_SECONDS = 3.0
REFUND_RETRY_SECONDS = 0.1
LEASE_PAUSE_EXTRA_MS = 2000  # no new slices for a little longer than the refund waits


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: str
    kind: str  # grant, purchase, refund, expiry, usage
    amount: int  # signed nanodollars: credit positive, debit negative
    created_at_ms: int
    ref: str  # the purchase, or the UTC day of a usage entry
    note: str | None = None  # a purchase paid after its checkout expired or failed, say


@dataclass(frozen=True, slots=True)
class Refund:
    purchase_id: str
    refunded: int
    fee: int
    created_at: str
    first_time: bool = True  # False when this refund was asked for, and made, before


@dataclass(frozen=True, slots=True)
class PurchaseStanding:
    """A purchase as its holder sees it."""

    purchase: Purchase
    refunded: int | None  # None: never refunded
    unused: int  # what of it is still unused (credits are used oldest purchase first)


class RefundRefused(Exception):
    """not_found, crypto, too_old or nothing_left."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Ledger:
    def __init__(self, redis: AnyRedis, scripts: Scripts) -> None:
        self._redis = redis
        self._scripts = scripts

    async def entries(
        self, account_id: str, before: tuple[int, str] | None, limit: int
    ) -> tuple[list[LedgerEntry], tuple[int, str] | None]:
        """Newest first; `before` is the (ms, id) of the last entry of the previous page."""
        k = AccountKeys(account_id)
        raw_stream = await self._redis.xrange(k.ledger) or []
        usage = await self._redis.hgetall(k.usage_by_day)
        entries = [
            LedgerEntry(
                str(sid),
                str(f["kind"]),
                int(f["amount"]),
                int(f["ms"]),
                str(f["ref"]),
                str(f["note"]) if f.get("note") else None,
            )
            for sid, f in raw_stream
            if f is not None
        ]
        for raw_day, amount in usage.items():
            day = str(raw_day)
            start = int(datetime.strptime(day, "%Y%m%d").replace(tzinfo=UTC).timestamp())
            ms = start * 1000 + MS_PER_DAY - 1  # a day's usage stands at the day's end
            entries.append(LedgerEntry(f"usage-{day}", "usage", -int(amount), ms, str(day)))
        entries.sort(key=lambda e: (e.created_at_ms, e.id), reverse=True)
        if before is not None:
            entries = [e for e in entries if (e.created_at_ms, e.id) < before]
        page = entries[:limit]
        more = len(entries) > limit
        return page, ((page[-1].created_at_ms, page[-1].id) if more and page else None)

    async def refund(
        self,
        account_id: str,
        purchase_id: str,
        now: float,
        window: float,
        *,
        already_paid_back: bool = False,
        notify_event_id: str = "",
    ) -> Refund:
        """`already_paid_back`: the payment side refunded the money itself (crypto too), so all
        that is unused comes back now, even what requests in flight hold. Otherwise a refund
        whose credit is held waits up to REFUND_WAIT_SECONDS for it, then is refused
        (`in_flight`). `notify_event_id`: the refund made is queued in the account's outbox,
        in the same step, as a `refund.requested` event with this id (metering.payments.outbox)."""
        k = AccountKeys(account_id)
        keys = [
            k.account,
            k.purchases,
            k.lots,
            k.lot_remainders,
            k.refunds,
            k.ledger,
            k.reservations,
            k.reservation_expiry,
            k.outbox,
        ]
        paid_back = "1" if already_paid_back else "0"
        started = time.monotonic()
        for _ in range(int(REFUND_WAIT_SECONDS / REFUND_RETRY_SECONDS) + 1):
            at = now + (time.monotonic() - started)
            pause_ms = int(REFUND_WAIT_SECONDS * 1000) + LEASE_PAUSE_EXTRA_MS
            args: list[str | int] = [purchase_id, int(at * 1000), int(window * 1000)]
            args += [rfc3339(at), paid_back, paid_back, pause_ms, notify_event_id]
            status, raw = await self._scripts.refund(keys=keys, args=args)
            if status != "in_flight":
                break
            await asyncio.sleep(REFUND_RETRY_SECONDS)  # leases give held credit back meanwhile
        if status not in ("refunded", "duplicate"):
            raise RefundRefused(str(status))
        if status == "refunded" and notify_event_id:
            await self._redis.zadd(OUTBOX_INDEX, {account_id: 0})
        data = orjson.loads(raw)
        return Refund(
            purchase_id=data["purchase_id"],
            refunded=int(data["refunded"]),
            fee=int(data["fee"]),
            created_at=data["created_at"],
            first_time=status == "refunded",
        )

    async def standings(self, account_id: str) -> list[PurchaseStanding]:
        """Every purchase of the account, newest first, with what was refunded of it and what of
        it a refund could still return (the refund script's own walk over the lots)."""
        k = AccountKeys(account_id)
        unused, purchases, refunds = await self._scripts.purchase_book(
            keys=[k.account, k.lots, k.lot_remainders, k.purchases, k.refunds]
        )
        unused_of = {str(unused[i]): int(unused[i + 1]) for i in range(0, len(unused), 2)}
        refunded_of = {
            str(refunds[i]): int(orjson.loads(refunds[i + 1])["refunded"])
            for i in range(0, len(refunds), 2)
        }
        found = []
        for i in range(0, len(purchases), 2):
            purchase = Purchase(**orjson.loads(purchases[i + 1]))
            found.append(
                PurchaseStanding(
                    purchase, refunded_of.get(purchase.id), unused_of.get(purchase.id, 0)
                )
            )
        found.sort(key=lambda s: (s.purchase.created_at_ms, s.purchase.id), reverse=True)
        return found

    async def expire(self, account_id: str, now: float, lifetime: float) -> int:
        """Expire what is unused of lots older than `lifetime` seconds; nanodollars expired."""
        k = AccountKeys(account_id)
        expired = await self._scripts.expire(
            keys=[
                k.account,
                k.lots,
                k.lot_remainders,
                k.ledger,
                k.reservations,
                k.reservation_expiry,
            ],
            args=[int(now * 1000), int((now - lifetime) * 1000) * 1000],
        )
        return int(expired)

    async def sweep(self, now: float, lifetime: float, lease_seconds: float) -> int | None:
        """expire_all under a lease, so that of several processes one does the pass; None when
        another holds the lease. (The script alone already keeps anything from expiring twice.)"""
        if not await self._redis.set(EXPIRY_LEASE, "1", nx=True, px=int(lease_seconds * 1000)):
            return None
        return await self.expire_all(now, lifetime)

    async def expire_all(self, now: float, lifetime: float, batch: int = 500) -> int:
        """One pass over every account (any process may run it; the script makes it safe)."""
        total = 0
        cursor = 0
        for _ in range(1_000_000):
            cursor, members = await self._redis.zscan(ACCOUNT_INDEX, cursor, count=batch)
            for account_id, _score in members:
                total += await self.expire(str(account_id), now, lifetime)
            if cursor == 0:
                break
        return total
