"""An account's purchases as its holder sees them: each with what was refunded of it and what of
it is still unused (the part a refund could return), read in one step so that they agree."""

from dataclasses import dataclass

import orjson

from metering.accounts import Purchase
from metering.layout import AccountKeys
from metering.transport.client import AnyRedis


@dataclass(frozen=True, slots=True)
class PurchaseStanding:
    purchase: Purchase
    refunded: int | None  # None: never refunded
    unused: int  # what of it is still unused (credits are used oldest purchase first)


def unused_by_lot(
    balance: int, lots_newest_first: list[str], remainders: dict[str, int]
) -> dict[str, int]:
    """The balance belongs to the newest lots: walking from the newest, each holds what is left
    of the balance, up to what refunds and expiry have left of it (lua/unused.lua, the same
    walk where it decides)."""
    left = max(balance, 0)
    out: dict[str, int] = {}
    for lot in lots_newest_first:
        take = min(left, remainders.get(lot, 0))
        out[lot] = take
        left -= take
    return out


async def purchase_standings(redis: AnyRedis, account_id: str) -> list[PurchaseStanding]:
    """Every purchase of the account, newest first."""
    k = AccountKeys(account_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hget(k.account, "balance")
        pipe.zrevrange(k.lots, 0, -1)
        pipe.hgetall(k.lot_remainders)
        pipe.hgetall(k.purchases)
        pipe.hgetall(k.refunds)
        balance, lots, remainders, purchases, refunds = await pipe.execute()
    unused = unused_by_lot(
        int(balance or 0),
        [str(lot) for lot in lots],
        {str(lot): int(v) for lot, v in (remainders or {}).items()},
    )
    standings = []
    for purchase_id, raw in (purchases or {}).items():
        purchase = Purchase(**orjson.loads(raw))
        refund = (refunds or {}).get(purchase_id)
        refunded = None if refund is None else int(orjson.loads(refund)["refunded"])
        standings.append(PurchaseStanding(purchase, refunded, unused.get(str(purchase_id), 0)))
    standings.sort(key=lambda s: (s.purchase.created_at_ms, s.purchase.id), reverse=True)
    return standings
