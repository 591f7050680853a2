"""The durable outbox of outgoing events, one list per account: auto top-up requests and refund
requests (the money of a refund the account holder made, to be returned by the payment side).

The settlement script queues a top-up request in the same step that takes the balance below the
account's threshold, and the refund script a refund request in the step that refunds, so a crash
loses nothing; a delivery worker (in the gateway) sends each
event, removes it once the receiver acknowledged it, and retries with backoff until then. Several
processes may deliver: a short lease per account keeps two from sending the same event at once,
and receivers dedupe on the event id anyway.
"""

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from metering.ids import random_hex
from metering.layout import ACCOUNT_INDEX, OUTBOX_INDEX, AccountKeys
from metering.money import usd_to_nanos
from metering.scripts import lua_source
from metering.transport.client import AnyRedis

DELIVERY_LEASE_MS = 30_000


def new_event_id(account_id: str) -> str:
    return f"evt-{account_id}-{random_hex(8)}"


@dataclass(frozen=True, slots=True)
class TopupRequest:
    raw: str  # as stored: removing it from the list needs the exact text
    id: str
    account_id: str
    amount: int
    threshold: int
    balance: int
    created_ms: int


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """A refund made here: the payment side returns `refunded` of the payment `payment_id`."""

    raw: str
    id: str
    account_id: str
    purchase_id: str
    payment_id: str
    method: str
    purchase_amount: int
    refunded: int
    fee_kept: int
    created_ms: int


OutboxEvent = TopupRequest | RefundRequest


class Outbox:
    def __init__(self, redis: AnyRedis) -> None:
        self._redis = redis
        self._clear_pending = redis.register_script(lua_source("clear_pending"))
        self._topup_off = redis.register_script(lua_source("topup_off"))
        self._lease_release = redis.register_script(lua_source("lease_release"))

    async def set_auto_topup(
        self, account_id: str, threshold: Decimal | None, amount: Decimal | None
    ) -> None:
        """Both set: on; both None: off (no top-up request stays outstanding or queued; refund
        requests stay)."""
        k = AccountKeys(account_id)
        key = k.account
        if threshold is None or amount is None:
            await self._topup_off(keys=[key, k.outbox])
            return
        await self._redis.hset(
            key,
            mapping={
                "topup_threshold": usd_to_nanos(threshold),
                "topup_amount": usd_to_nanos(amount),
            },
        )

    async def auto_topup(self, account_id: str) -> tuple[int, int, bool] | None:
        """(threshold, amount, a request outstanding) or None when auto top-up is off."""
        raw = await self._redis.hmget(
            AccountKeys(account_id).account, ["topup_threshold", "topup_amount", "topup_pending"]
        )
        if not raw[0]:
            return None
        return int(raw[0]), int(raw[1] or 0), bool(raw[2])

    async def accounts_with_events(self, limit: int = 100) -> list[str]:
        found = await self._redis.zrange(OUTBOX_INDEX, 0, limit - 1)
        return [str(a) for a in found]

    async def take_lease(self, account_id: str, holder: str) -> bool:
        lease = f"{AccountKeys(account_id).outbox}:lease"
        return bool(await self._redis.set(lease, holder, nx=True, px=DELIVERY_LEASE_MS))

    async def release_lease(self, account_id: str, holder: str) -> bool:
        """Released only while `holder` still holds it (it may have expired and gone to another)."""
        lease = f"{AccountKeys(account_id).outbox}:lease"
        return bool(await self._lease_release(keys=[lease], args=[holder]))

    async def pending(self, account_id: str) -> list[OutboxEvent]:
        outbox = AccountKeys(account_id).outbox
        items = await self._redis.lrange(outbox, 0, 99)
        if not items:
            await self._redis.zrem(OUTBOX_INDEX, account_id)
            if await self._redis.llen(outbox):  # a settlement queued one meanwhile
                await self._redis.zadd(OUTBOX_INDEX, {account_id: 0})
        return [_parse(account_id, str(item)) for item in items]

    async def delivered(self, event: OutboxEvent) -> None:
        await self._redis.lrem(AccountKeys(event.account_id).outbox, 1, event.raw)

    async def failed(self, event: TopupRequest) -> None:
        """Given up: drop it, and let a later settlement ask again."""
        k = AccountKeys(event.account_id)
        await self._redis.lrem(k.outbox, 1, event.raw)
        await self.answered(event.account_id, event.id)

    async def answered(self, account_id: str, event_id: str) -> bool:
        """The request `event_id` will not be bought (failed): it no longer blocks a new one."""
        cleared = await self._clear_pending(keys=[AccountKeys(account_id).account], args=[event_id])
        return bool(cleared)

    async def reindex(self, batch: int = 500) -> int:
        """Find outboxes that missed the index (their gateway died between the two writes)."""
        found = 0
        cursor = 0
        for _ in range(1_000_000):
            cursor, members = await self._redis.zscan(ACCOUNT_INDEX, cursor, count=batch)
            for account_id, _score in members:
                if await self._redis.llen(AccountKeys(str(account_id)).outbox):
                    await self._redis.zadd(OUTBOX_INDEX, {str(account_id): 0})
                    found += 1
            if cursor == 0:
                return found
        return found


def _parse(account_id: str, raw: str) -> OutboxEvent:
    data: dict[str, Any] = orjson.loads(raw)
    if data.get("type") == "refund.requested":
        return RefundRequest(
            raw=raw,
            id=str(data["id"]),
            account_id=account_id,
            purchase_id=str(data["purchase_id"]),
            payment_id=str(data["payment_id"]),
            method=str(data["method"]),
            purchase_amount=int(data["purchase_amount"]),
            refunded=int(data["refunded"]),
            fee_kept=int(data["fee_kept"]),
            created_ms=int(data["created_ms"]),
        )
    return TopupRequest(
        raw=raw,
        id=str(data["id"]),
        account_id=account_id,
        amount=int(data["amount"]),
        threshold=int(data["threshold"]),
        balance=int(data["balance"]),
        created_ms=int(data["created_ms"]),
    )
