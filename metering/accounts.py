"""Accounts, API keys and purchases: the operator's side of the money.

An API key's secret is shown once at creation; only its sha256 is stored. The index from that hash
to the account lives outside the account's slot and is written last, so a key is usable only once
its record is complete.
"""

import hashlib
import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

import orjson
from redis.typing import EncodableT, FieldT

from metering.ids import account_in_id, body_fingerprint
from metering.layout import ACCOUNT_INDEX, AccountKeys, key_index
from metering.money import MAX_NANOS, usd_to_nanos
from metering.periods import period_stamps, rfc3339
from metering.scripts import Scripts
from metering.transport.client import AnyRedis

PaymentMethod = Literal["card", "alipay", "crypto"]
PurchaseSource = Literal["operator", "payment_side"]
LimitReset = Literal["daily", "weekly", "monthly"]
KEY_PREFIX = "sk-gw-v1-"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_account_id() -> str:
    return secrets.token_hex(6)


def new_purchase_id(account_id: str) -> str:
    """`pur-<account>-<random>`: a refund finds its purchase in the account's slot by id alone."""
    return f"pur-{account_id}-{secrets.token_hex(8)}"


def account_of_purchase(purchase_id: str) -> str | None:
    return account_in_id("pur", purchase_id)


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    balance: int
    reserved: int
    purchased: int
    granted: int
    usage: int
    created_at: str
    refunded: int = 0
    expired: int = 0


@dataclass(frozen=True, slots=True)
class ApiKey:
    hash: str
    account_id: str
    name: str
    disabled: bool
    management: bool
    created_at: str
    expires_at_ms: int | None
    limit: int | None
    limit_reset: LimitReset | None
    usage: int
    usage_daily: int
    usage_weekly: int
    usage_monthly: int


@dataclass(frozen=True, slots=True)
class Purchase:
    id: str
    account_id: str
    amount: int
    fee: int
    method: str
    idempotency_key: str
    created_at: str
    created_at_ms: int = 0
    checkout_id: str = ""  # the checkout (metering.payments.checkouts) it paid, if any
    # payment_side: a payment webhook credited it (the payment side can return its money);
    # operator: the admin API did (a bank transfer, say: the operator refunds it)
    source: PurchaseSource = "operator"


class IdempotencyConflict(Exception):
    """The idempotency key was used before with a different request body."""


class AccountNotFound(Exception):
    pass


class AmountTooLarge(Exception):
    """The credit would push a counter past what Redis scripts keep exact."""


class AccountStore:
    def __init__(self, redis: AnyRedis, scripts: Scripts) -> None:
        self._redis = redis
        self._scripts = scripts

    async def create_account(self, name: str, grant: int, now: float) -> Account:
        for _ in range(8):
            account_id = new_account_id()
            k = AccountKeys(account_id)
            created = await self._scripts.create_account(
                keys=[k.account, k.ledger, k.lots, k.lot_remainders],
                args=[name, grant, rfc3339(now), int(now * 1000)],
            )
            if int(created) == 1:
                await self._redis.zadd(ACCOUNT_INDEX, {account_id: now})
                account = await self.get_account(account_id)
                assert account is not None
                return account
        raise RuntimeError("could not allocate an account id")

    async def get_account(self, account_id: str) -> Account | None:
        if not _plausible_id(account_id):
            return None
        raw = await self._redis.hgetall(AccountKeys(account_id).account)
        if not raw:
            return None
        return Account(
            id=account_id,
            name=str(raw.get("name", "")),
            balance=int(raw.get("balance", 0)),
            reserved=int(raw.get("reserved", 0)),
            purchased=int(raw.get("purchased", 0)),
            granted=int(raw.get("granted", 0)),
            usage=int(raw.get("usage", 0)),
            created_at=str(raw.get("created_at", "")),
            refunded=int(raw.get("refunded", 0)),
            expired=int(raw.get("expired", 0)),
        )

    async def account_ids(self, limit: int) -> list[str]:
        """The oldest `limit` accounts' ids."""
        return [str(a) for a in await self._redis.zrange(ACCOUNT_INDEX, 0, limit - 1)]

    async def create_key(
        self,
        account_id: str,
        name: str,
        now: float,
        *,
        limit: int | None = None,
        limit_reset: LimitReset | None = None,
        management: bool = False,
        expires_at_ms: int | None = None,
    ) -> tuple[str, ApiKey]:
        """Returns the secret (shown once, never stored) and the stored key record."""
        if not await self._redis.exists(AccountKeys(account_id).account):
            raise AccountNotFound(account_id)
        secret = KEY_PREFIX + secrets.token_hex(32)
        key_hash = hash_secret(secret)
        k = AccountKeys(account_id)
        fields: dict[FieldT, EncodableT] = {
            "name": name,
            "disabled": "0",
            "management": "1" if management else "0",
            "created_at": rfc3339(now),
            "expires_at": "" if expires_at_ms is None else str(expires_at_ms),
            "limit": "" if limit is None else str(limit),
            "limit_reset": limit_reset or "",
            "usage": 0,
            # creation order, for listing (two keys may share a millisecond)
            "seq": await self._redis.hincrby(k.account, "key_seq", 1),
        }
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(k.api_key(key_hash), mapping=fields)
            pipe.sadd(k.api_keys, key_hash)
            await pipe.execute()
        await self._redis.set(key_index(key_hash), account_id)
        record = await self.get_key(account_id, key_hash, now)
        assert record is not None
        return secret, record

    async def account_of_key(self, key_hash: str) -> str | None:
        value = await self._redis.get(key_index(key_hash))
        return None if value is None else str(value)

    async def get_key(self, account_id: str, key_hash: str, now: float) -> ApiKey | None:
        raw = await self._redis.hgetall(AccountKeys(account_id).api_key(key_hash))
        if not raw:
            return None
        day, week, month = period_stamps(now)

        def period(field: str, stamp_field: str, stamp: str) -> int:
            return int(raw.get(field, 0)) if raw.get(stamp_field) == stamp else 0

        return ApiKey(
            hash=key_hash,
            account_id=account_id,
            name=str(raw.get("name", "")),
            disabled=raw.get("disabled") == "1",
            management=raw.get("management") == "1",
            created_at=str(raw.get("created_at", "")),
            expires_at_ms=int(raw["expires_at"]) if raw.get("expires_at") else None,
            limit=int(raw["limit"]) if raw.get("limit") else None,
            limit_reset=raw.get("limit_reset") or None,  # type: ignore[arg-type]
            usage=int(raw.get("usage", 0)),
            usage_daily=period("usage_daily", "day", day),
            usage_weekly=period("usage_weekly", "week", week),
            usage_monthly=period("usage_monthly", "month", month),
        )

    async def update_key(
        self,
        key_hash: str,
        now: float,
        *,
        disabled: bool | None = None,
        limit: int | Literal["keep"] | None = "keep",
        limit_reset: LimitReset | Literal["keep"] | None = "keep",
        name: str | None = None,
        expires_at_ms: int | Literal["keep"] | None = "keep",
    ) -> ApiKey | None:
        account_id = await self.account_of_key(key_hash)
        if account_id is None:
            return None
        fields: dict[FieldT, EncodableT] = {}
        if name is not None:
            fields["name"] = name
        if expires_at_ms != "keep":
            fields["expires_at"] = "" if expires_at_ms is None else str(expires_at_ms)
        if disabled is not None:
            fields["disabled"] = "1" if disabled else "0"
        if limit != "keep":
            fields["limit"] = "" if limit is None else str(limit)
        if limit_reset != "keep":
            fields["limit_reset"] = limit_reset or ""
        if fields:
            k = AccountKeys(account_id)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(k.api_key(key_hash), mapping=fields)
                pipe.hincrby(k.account, "lease_epoch", 1)  # leases check their keys again
                await pipe.execute()
        return await self.get_key(account_id, key_hash, now)

    async def recall_leases(self, account_id: str) -> None:
        """The account's leases go back (metering.leasing): its keys or limits changed."""
        await self._redis.hincrby(AccountKeys(account_id).account, "lease_epoch", 1)

    async def list_keys(self, account_id: str, now: float) -> list[ApiKey]:
        """The account's keys, oldest first."""
        k = AccountKeys(account_id)
        hashes = [str(h) for h in await self._redis.smembers(k.api_keys)]
        async with self._redis.pipeline(transaction=False) as pipe:
            for h in hashes:
                pipe.hget(k.api_key(h), "seq")
            seqs = await pipe.execute()
        ordered = sorted(zip(hashes, seqs, strict=True), key=lambda hs: int(hs[1] or 0))
        keys = [await self.get_key(account_id, h, now) for h, _ in ordered]
        return [key for key in keys if key is not None]

    async def delete_key(self, account_id: str, key_hash: str) -> bool:
        k = AccountKeys(account_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(k.api_key(key_hash))
            pipe.srem(k.api_keys, key_hash)
            pipe.hincrby(k.account, "lease_epoch", 1)  # leases check their keys again
            deleted, _, _ = await pipe.execute()
        await self._redis.delete(key_index(key_hash))
        return bool(deleted)

    async def purchase(
        self,
        account_id: str,
        amount: Decimal,
        fee: int,
        method: PaymentMethod,
        idempotency_key: str,
        now: float,
        checkout_id: str = "",
        source: PurchaseSource = "operator",
    ) -> tuple[Purchase, bool]:
        """Credit a purchase once per idempotency key; (purchase, created_now). A purchase that
        pays a checkout completes it in the same step."""
        amount_nanos = usd_to_nanos(amount)
        fingerprint = body_fingerprint("purchase", amount_nanos, method)
        purchase_id = new_purchase_id(account_id)
        record = {
            "id": purchase_id,
            "account_id": account_id,
            "amount": amount_nanos,
            "fee": fee,
            "method": method,
            "idempotency_key": idempotency_key,
            "created_at": rfc3339(now),
            "created_at_ms": int(now * 1000),
            "source": source,
        }
        if checkout_id:
            record["checkout_id"] = checkout_id
        k = AccountKeys(account_id)
        keys = [k.account, k.idempotency, k.purchases, k.ledger, k.lots, k.lot_remainders]
        status, stored = await self._scripts.purchase(
            keys=[*keys, k.checkouts, k.open_checkouts],
            args=[
                idempotency_key,
                fingerprint,
                purchase_id,
                amount_nanos,
                orjson.dumps(record).decode(),
                MAX_NANOS,
                int(now * 1000),
                checkout_id,
            ],
        )
        if status == "conflict":
            raise IdempotencyConflict(idempotency_key)
        if status == "no_account":
            raise AccountNotFound(account_id)
        if status == "too_large":
            raise AmountTooLarge(account_id)
        return Purchase(**orjson.loads(stored)), status == "created"

    async def get_purchase(self, account_id: str, purchase_id: str) -> Purchase | None:
        stored = await self._redis.hget(AccountKeys(account_id).purchases, purchase_id)
        return None if stored is None else Purchase(**orjson.loads(stored))

    async def purchase_by_idempotency(self, account_id: str, key: str) -> Purchase | None:
        stored = await self._redis.hget(AccountKeys(account_id).idempotency, key)
        if stored is None:
            return None
        return Purchase(**orjson.loads(str(stored).split("\n", 1)[1]))


def _plausible_id(account_id: str) -> bool:
    return 0 < len(account_id) <= 64 and account_id.isalnum()
