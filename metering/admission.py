"""Admission and settlement: the two Redis round trips of every forwarded request.

Admission checks the key and the balance and reserves the request's worst-case cost in one script;
settlement releases that reservation, debits the exact cost and writes the usage record in another,
idempotent on the generation id. A reservation whose settlement never comes (its gateway died)
expires after `reservation_timeout` and is released by the next admission on that account.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import TimeoutError as RedisTimeoutError

from metering.layout import OUTBOX_INDEX, AccountKeys
from metering.leasing.lease import LeaseTicket
from metering.leasing.leases import Leases, LimitInputs
from metering.payments.outbox import new_event_id
from metering.periods import period_stamps
from metering.rollup_fold import RollupFold
from metering.scripts import Scripts
from metering.transport.batch_calls import Durable
from metering.transport.client import STORE_ERRORS, AnyRedis, Batcher
from metering.transport.settle_merge import MAX_MERGED, split_reply
from metering.usage import UsageRecord

IN_FLIGHT_SLACK_MS = 60_000  # a place in flight's set outlives its last place by this much
Held = tuple[str, str, int]  # what else a request holds: (key, kind, amount), see settle.lua

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript


class Refusal(StrEnum):
    NO_KEY = "no_key"
    DISABLED = "disabled"
    EXPIRED = "expired"
    MANAGEMENT_KEY = "management_key"
    NO_ACCOUNT = "no_account"
    NEGATIVE_BALANCE = "negative_balance"
    KEY_LIMIT = "key_limit"
    RATE_LIMITED = "rate_limited"
    INSUFFICIENT = "insufficient"


@dataclass(frozen=True, slots=True)
class AdmissionResult:
    refusal: Refusal | None
    balance: int
    reserved: int
    limit_refused: int = 0  # 1-based index of the limit that refused, when RATE_LIMITED
    limit_counts: tuple[int, ...] = ()  # from the limit hooks: count, allowed, count, allowed...
    purchased: int = 0  # lifetime purchases, which choose a limit's tier
    key_left: int = -1  # what the key's credit limit leaves; -1 when it has none
    lease: LeaseTicket | None = None  # admitted from this process's lease (metering.leasing)

    @property
    def admitted(self) -> bool:
        return self.refusal is None

    @property
    def available(self) -> int:
        return self.balance - self.reserved


@dataclass(frozen=True, slots=True)
class SettlementResult:
    applied: bool  # False: this generation was settled before, nothing changed
    balance: int
    topup_requested: bool = False


class Metering:
    def __init__(
        self,
        redis: AnyRedis,
        scripts: Scripts,
        *,
        reservation_timeout: float,
        record_ttl_seconds: int,
        timeout: float | None = None,
        topup_pending_seconds: float = 86_400,
        admission_timeout: float | None = None,
        batcher: Batcher | None = None,
        fold: RollupFold | None = None,
        lease_above_per_second: float = 0.0,
        lease_seconds: float = 1.0,
    ) -> None:
        """`timeout` bounds each round trip (give the client no socket timeout then: redis-py
        wraps every socket write in a task of its own for that, on the hot path). `fold`, when
        given, is told of every account settled, to count its records into the rollups. Above
        `lease_above_per_second` leasable requests a second on one account, its requests are
        admitted from a lease (metering.leasing; 0: never)."""
        self._redis = redis
        self._batcher = batcher
        self._timeout = timeout
        self._admission_timeout = admission_timeout or timeout
        self._scripts = scripts
        self._reservation_timeout_ms = int(reservation_timeout * 1000)
        self._record_ttl = record_ttl_seconds
        self._fold = fold
        self._topup_pending_ms = int(topup_pending_seconds * 1000)
        self._background: set[asyncio.Future[None]] = set()
        self._journaled: dict[str, LeaseTicket] = {}  # leased settlements waiting for a replay
        self.leases = Leases(
            scripts,
            self._run_lease,
            above_per_second=lease_above_per_second,
            seconds=lease_seconds,
            reservation_timeout=reservation_timeout,
        )

    async def admit(
        self,
        account_id: str,
        key_hash: str,
        generation_id: str,
        reserve: int,
        *,
        paid: bool,
        now: float,
        limit_keys: Sequence[str] = (),
        limit_args: Sequence[str | int] = (),
        limit_counters: Sequence[str] = (),
        limit_takes: Sequence[int] = (),
        leasable: bool = False,
    ) -> AdmissionResult:
        """`limit_keys`/`limit_args` are what the admission prelude's limit hooks read, and
        `limit_counters` which of those keys are the windows' counters, `limit_takes` what the
        request takes of each (1 request, or tokens; 1 each if not given). `leasable`: the caller
        lets a paid request be admitted from the account's lease, with slices of its rate-limit
        windows (the lease checks the key, and leases no key that has a credit limit)."""
        if leasable and paid and self.leases.on:
            limits = LimitInputs(limit_keys, limit_args or (0,), limit_counters, limit_takes)
            ticket = await self.leases.admit(account_id, key_hash, reserve, now, limits)
            if ticket is not None:
                return AdmissionResult(None, 0, 0, limit_counts=ticket.counts, lease=ticket)
        k = AccountKeys(account_id)
        now_ms = int(now * 1000)
        keys = [k.account, k.api_key(key_hash), k.reservations, k.reservation_expiry, *limit_keys]
        args = [
            now_ms,
            generation_id,
            reserve,
            now_ms + self._reservation_timeout_ms,
            "1" if paid else "0",
            *period_stamps(now),
            *(limit_args or (0,)),
        ]
        reply = await self._run(self._scripts.admit, keys, args, self._admission_timeout)
        status, balance, reserved, refused, counts = reply[:5]
        refusal = None if status == "ok" else Refusal(status)
        return AdmissionResult(
            refusal,
            int(balance),
            int(reserved),
            int(refused),
            tuple(int(c) for c in counts),
            int(reply[5]) if len(reply) > 5 else 0,
            int(reply[6]) if len(reply) > 6 else -1,
        )

    async def settle(
        self,
        record: UsageRecord,
        now: float,
        *,
        sent: "asyncio.Future[None] | None" = None,
        replayed: bool = False,
        held: Sequence[Held] = (),
    ) -> SettlementResult:
        """`replayed`: a journaled settlement run again, which a replica must confirm (raises
        NotReplicated when none does: it stays in the journal). `held`: as send_settlement's."""
        reply = await self.send_settlement(record, now, sent=sent, replayed=replayed, held=held)
        self._replayed(record.id)
        return self.settled(record, reply, now)

    def unsettled(self, record: UsageRecord, lease: LeaseTicket) -> None:
        """A leased request's settlement went to the journal: its lease keeps covering it until
        the replay (`settle`) has run, or for as long as a reservation would hold it."""
        self._journaled[record.id] = lease
        loop = asyncio.get_running_loop()
        loop.call_later(self._reservation_timeout_ms / 1000, self._replayed, record.id)

    def _replayed(self, generation_id: str) -> None:
        ticket = self._journaled.pop(generation_id, None)
        if ticket is not None:  # its cost was debited beside the lease: the next renewal
            ticket.close()  # sizes the lease from the balance as it is

    def send_settlement(
        self,
        record: UsageRecord,
        now: float,
        *,
        sent: "asyncio.Future[None] | None" = None,
        replayed: bool = False,
        lease: LeaseTicket | None = None,
        held: Sequence[Held] = (),
    ) -> "asyncio.Future[Any]":
        """The settlement script on its way: the future of its raw reply, for `settled()`.
        Without a coroutine or a task on the batcher's path (a completion's last step).
        `sent`, when given, is resolved once the script is handed to the kernel on a connection
        that has answered before (see ScriptBatcher.submit); else it stays pending. Where the
        store has replicas, a replica confirms it (see metering/batching.py). `held`: what the
        admission's limit hooks took beside the money, given back with it (the rate limiter's
        places in flight and its windows' token true-ups)."""
        keys, args = self._settlement(
            [(record, now)], lease.hold if lease is not None else "", held
        )
        if self._batcher is not None:
            durable = Durable.MUST if replayed else Durable.TRY
            return self._batcher.submit(
                self._scripts.settle, keys, args, self._timeout, sent, durable=durable
            )
        return asyncio.ensure_future(self._run(self._scripts.settle, keys, args, self._timeout))

    def settled(
        self, record: UsageRecord, reply: Any, now: float, lease: LeaseTicket | None = None
    ) -> SettlementResult:
        """What the settlement script's reply says. A settlement that asked for an auto top-up
        also puts its account in the delivery worker's index, in the background: the worker's
        periodic scan finds it anyway."""
        topup = int(reply[0]) == 1
        if lease is not None:  # a duplicate drew the cost the first time (or nothing: less room)
            self.leases.settled(lease, record.cost, str(reply[3]), now)
        if self._fold is not None:
            self._fold.mark(record.account_id)
        if topup:
            task = asyncio.ensure_future(self._index_topup(record.account_id, now))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return SettlementResult(reply[1] == "ok", int(reply[2]), topup)

    async def aclose(self, timeout: float = 1.0) -> None:
        """Let the top-up index writes still out finish (briefly), then drop the rest: the
        delivery worker's scan finds their accounts anyway."""
        if self._background:
            _, left = await asyncio.wait(set(self._background), timeout=timeout)
            for task in left:
                task.cancel()
            if left:
                await asyncio.wait(left)

    async def _index_topup(self, account_id: str, now: float) -> None:
        with contextlib.suppress(*STORE_ERRORS):
            async with self._bounded():
                await self._redis.zadd(OUTBOX_INDEX, {account_id: now})

    async def settle_many(self, settlements: Sequence[tuple[UsageRecord, float]]) -> int:
        """Settle records in one pipeline (seeding and back-fills), each account's in calls of
        up to MAX_MERGED records: the same script, applied once per generation id; returns how
        many were applied now."""
        by_account: dict[str, list[tuple[UsageRecord, float]]] = {}
        for record, now in settlements:
            by_account.setdefault(record.account_id, []).append((record, now))
        calls = [
            records[i : i + MAX_MERGED]
            for records in by_account.values()
            for i in range(0, len(records), MAX_MERGED)
        ]
        if not isinstance(self._redis, Redis):  # a cluster: the calls go to their own masters
            replies = await asyncio.gather(
                *(self._scripts.settle(*self._settlement(call)) for call in calls)
            )
        else:
            async with self._redis.pipeline(transaction=False) as pipe:
                for call in calls:
                    keys, args = self._settlement(call)
                    await self._scripts.settle(keys=keys, args=args, client=pipe)
                replies = await pipe.execute()
        if self._fold is not None:
            for account_id in by_account:
                self._fold.mark(account_id)
        return sum(
            1
            for call, reply in zip(calls, replies, strict=True)
            for one in split_reply(reply, len(call))
            if one[1] == "ok"
        )

    def _settlement(
        self,
        settlements: Sequence[tuple[UsageRecord, float]],
        lease: str = "",
        held: Sequence[Held] = (),
    ) -> tuple[list[str], list[Any]]:
        """settle.lua's keys and arguments for records of one account (`lease`: the id of the
        lease that admitted them, or ''; `held`: what a single record holds beside money)."""
        k = AccountKeys(settlements[0][0].account_id)
        keys = [
            k.account,
            k.reservations,
            k.reservation_expiry,
            k.usage_stream,
            k.usage_by_day,
            k.outbox,
            k.rollup_cursor,
        ]
        args: list[Any] = [
            self._record_ttl,
            self._record_ttl * 1000,
            new_event_id(k.account_id),
            self._topup_pending_ms,
        ]
        for record, now in settlements:
            keys += [k.api_key(record.key_hash), k.generation(record.id)]
            args += [record.id, record.cost, record.to_json_bytes(), int(now * 1000)]
            args += [*period_stamps(now), lease, len(held)]
            for key, kind, amount in held:
                keys.append(key)
                args += [kind, amount]
        return keys, args

    def _run_lease(self, script: "AsyncScript", keys: list[str], args: list[Any]) -> Any:
        return self._run(script, keys, args, self._admission_timeout)

    async def _run(
        self,
        script: "AsyncScript",
        keys: list[str],
        args: list[Any],
        bound: float | None,
        sent: "asyncio.Future[None] | None" = None,
    ) -> Any:
        """One script call within `bound` seconds (else RedisTimeoutError)."""
        if self._batcher is not None:
            return await self._batcher.submit(script, keys, args, bound, sent)
        async with self._bounded(bound):
            return await script(keys=keys, args=args)

    @contextlib.asynccontextmanager
    async def _bounded(self, seconds: float | None = None) -> AsyncIterator[None]:
        limit = seconds or self._timeout
        try:
            async with asyncio.timeout(limit):
                yield
        except TimeoutError:
            raise RedisTimeoutError(f"redis did not answer within {limit} s") from None

    async def ensure_scripts(self) -> int:
        return await self._scripts.load()

    async def release(
        self, account_id: str, generation_id: str, now: float, in_flight: Sequence[str] = ()
    ) -> int:
        """Give back a reservation whose admission reply never came (the script may have run,
        or may yet run: a late admission of this id then takes nothing), and its places in the
        sorted sets `in_flight` (the limit hooks'). 1 when it held money, 0 when there was
        nothing (again) to give back."""
        k = AccountKeys(account_id)
        tombstone_until = int(now * 1000) + self._reservation_timeout_ms
        async with self._bounded():
            held = await self._scripts.release(
                keys=[k.account, k.reservations, k.reservation_expiry, *in_flight],
                args=[generation_id, tombstone_until],
            )
        return int(held)

    async def renew(
        self, account_id: str, generation_id: str, now: float, in_flight: Sequence[str] = ()
    ) -> None:
        """Push back the expiry of a reservation still in use (a long stream), and of its
        places in the sorted sets `in_flight` (the limit hooks', which expire a little after
        their last place); a settled or released one stays gone."""
        expiry = int(now * 1000) + self._reservation_timeout_ms
        expiry_key = AccountKeys(account_id).reservation_expiry
        async with self._bounded():
            if not in_flight:
                await self._redis.zadd(expiry_key, {generation_id: expiry}, xx=True)
                return
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(expiry_key, {generation_id: expiry}, xx=True)
                for key in in_flight:
                    pipe.zadd(key, {generation_id: expiry}, xx=True)
                    pipe.pexpireat(key, expiry + IN_FLIGHT_SLACK_MS)
                await pipe.execute()

    async def generation(self, account_id: str, generation_id: str) -> UsageRecord | None:
        k = AccountKeys(account_id)
        keys = [k.generation(generation_id), k.usage_stream]
        raw = await self._run(self._scripts.generation, keys, [], self._timeout)
        return None if raw is None else UsageRecord.from_json(raw)
