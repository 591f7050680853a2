"""Checkouts: purchases the account holder asked for and the payment side has not paid yet.

A checkout is opened once per idempotency key, and is *pending* until the payment side's signed
webhook pays it (the purchase script completes it in the step that credits: see
AccountStore.purchase) or says it failed. One nobody pays within its lifetime is shown as failed
(`expired`); a payment that still comes for it credits all the same, since money received is
never lost, and the ledger entry says it came late.
"""

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from metering.ids import account_in_id, body_fingerprint, random_hex
from metering.layout import AccountKeys
from metering.scripts import lua_source
from metering.transport.client import AnyRedis

CheckoutStatus = Literal["pending", "completed", "failed"]


def new_checkout_id(account_id: str) -> str:
    """`chk-<account>-<random>`: the account's slot is found from the id alone."""
    return f"chk-{account_id}-{random_hex(8)}"


def account_of_checkout(checkout_id: str) -> str | None:
    return account_in_id("chk", checkout_id)


@dataclass(frozen=True, slots=True)
class Checkout:
    id: str
    account_id: str
    amount: int
    fee: int
    method: str
    idempotency_key: str
    created_ms: int
    expires_ms: int
    stored_status: CheckoutStatus
    failure: str | None = None  # why a failed one failed: failed, declined, ...
    purchase_id: str | None = None
    late: bool = False  # paid after it had expired or failed
    url: str | None = None  # where the payment side collects it

    def status(self, now_ms: int) -> CheckoutStatus:
        """As shown: one still pending past its lifetime has failed (expired)."""
        if self.stored_status == "pending" and now_ms >= self.expires_ms:
            return "failed"
        return self.stored_status

    def failure_reason(self, now_ms: int) -> str | None:
        if self.status(now_ms) != "failed":
            return None
        return self.failure or "expired"


class CheckoutConflict(Exception):
    """The idempotency key was used before with another amount or method."""


class TooManyCheckouts(Exception):
    pass


class CheckoutAccountMissing(Exception):
    pass


class Checkouts:
    def __init__(self, redis: AnyRedis) -> None:
        self._redis = redis
        self._open = redis.register_script(lua_source("checkout_open"))
        self._close = redis.register_script(lua_source("checkout_close"))

    async def open(
        self,
        account_id: str,
        amount: int,
        fee: int,
        method: str,
        idempotency_key: str,
        now: float,
        *,
        lifetime: float,
        most_open: int,
    ) -> tuple[Checkout, bool]:
        """(the checkout, opened now); the same idempotency key again gives the first one."""
        fingerprint = body_fingerprint("checkout", amount, method)
        checkout_id = new_checkout_id(account_id)
        now_ms, expires_ms = int(now * 1000), int((now + lifetime) * 1000)
        record = {
            "id": checkout_id,
            "amount": str(amount),
            "fee": str(fee),
            "method": method,
            "idempotency_key": idempotency_key,
            "created_ms": str(now_ms),
            "expires_ms": str(expires_ms),
            "status": "pending",
        }
        k = AccountKeys(account_id)
        status, raw = await self._open(
            keys=[k.account, k.checkout_idempotency, k.checkouts, k.open_checkouts],
            args=[
                idempotency_key,
                fingerprint,
                checkout_id,
                orjson.dumps(record).decode(),
                now_ms,
                most_open,
                expires_ms,
            ],
        )
        if status == "conflict":
            raise CheckoutConflict(idempotency_key)
        if status == "too_many":
            raise TooManyCheckouts(account_id)
        if status == "no_account":
            raise CheckoutAccountMissing(account_id)
        checkout = _parse(account_id, str(raw))
        if status == "duplicate":
            checkout = await self.get(account_id, checkout.id) or checkout
        return checkout, status == "created"

    async def set_url(self, checkout: Checkout, url: str) -> None:
        """Where the payment side collects it; written once (a later answer changes nothing)."""
        k = AccountKeys(checkout.account_id)
        await self._redis.hsetnx(k.checkout_urls, checkout.id, url)

    async def claim_asking(self, checkout: Checkout, seconds: float) -> bool:
        """Whether this call is the one to ask the payment side (for up to `seconds`); the others
        wait for its answer (see gateway.billing.checkout)."""
        key = AccountKeys(checkout.account_id).checkout_asking(checkout.id)
        return bool(await self._redis.set(key, "1", nx=True, px=int(seconds * 1000)))

    async def asked(self, checkout: Checkout, failed_at_ms: int | None) -> None:
        """The asking call is done: with no URL (`failed_at_ms`), the calls waiting for it
        answer so too; a later call asks again."""
        k = AccountKeys(checkout.account_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            if failed_at_ms is not None:
                pipe.set(k.checkout_ask_failed(checkout.id), failed_at_ms, px=60_000)
            pipe.delete(k.checkout_asking(checkout.id))
            await pipe.execute()

    async def asking_failed_at(self, checkout: Checkout) -> int | None:
        """When (ms) the last call that asked got no URL, within the last minute."""
        key = AccountKeys(checkout.account_id).checkout_ask_failed(checkout.id)
        found = await self._redis.get(key)
        return None if found is None else int(found)

    async def get(self, account_id: str, checkout_id: str) -> Checkout | None:
        k = AccountKeys(account_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(k.checkouts, checkout_id)
            pipe.hget(k.checkout_urls, checkout_id)
            raw, url = await pipe.execute()
        if raw is None:
            return None
        return _parse(account_id, str(raw), None if url is None else str(url))

    async def all(self, account_id: str) -> list[Checkout]:
        """Every checkout of the account, newest first."""
        k = AccountKeys(account_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(k.checkouts)
            pipe.hgetall(k.checkout_urls)
            records, urls = await pipe.execute()
        found = [
            _parse(account_id, str(raw), urls.get(cid)) for cid, raw in (records or {}).items()
        ]
        return sorted(found, key=lambda c: (c.created_ms, c.id), reverse=True)

    async def close(self, account_id: str, checkout_id: str, why: str, now: float) -> bool:
        """Mark an open checkout failed (`why`); False when it was not open."""
        k = AccountKeys(account_id)
        status, _ = await self._close(
            keys=[k.checkouts, k.open_checkouts], args=[checkout_id, why, int(now * 1000)]
        )
        return bool(status == "closed")


def _parse(account_id: str, raw: str, url: str | None = None) -> Checkout:
    data: dict[str, Any] = orjson.loads(raw)
    return Checkout(
        id=str(data["id"]),
        account_id=account_id,
        amount=int(data["amount"]),
        fee=int(data["fee"]),
        method=str(data["method"]),
        idempotency_key=str(data["idempotency_key"]),
        created_ms=int(data["created_ms"]),
        expires_ms=int(data["expires_ms"]),
        stored_status=data["status"],
        failure=data.get("failure") or None,
        purchase_id=data.get("purchase_id") or None,
        late=data.get("late") == "1",
        url=url,
    )
