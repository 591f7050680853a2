"""The Activity rollups, counted from the usage stream after settlement instead of inside it.

Settlement used to add every request to four rollup buckets itself: 16 to 20 HINCRBYs in the
settlement script, most of its Redis work. Now settlement only appends the record to the account's
usage stream (with its rollup time, field `t`), and a fold reads the entries past the account's
cursor, adds them up here, in the gateway, and writes each bucket's sums once for the whole run,
moving the cursor in the same script only if no other fold moved it first: every entry is counted
exactly once, whichever process folds, and however often it restarts (the cursor lives in the
account's slot, beside the stream).

Two things bound the lag: the process that settled an account folds it every `interval` seconds,
and a read of the rollups (`Rollups.read`) folds the account first, so Activity always shows every
request settled before it was asked. Where several processes settle one busy account, one of them
folds it: its background fold holds a lease on the account (LEASE_MS, renewed by each of its
passes), and the others' background folds pass it by until the lease lapses (their marks kept),
instead of each reading the same entries to find another had counted them. Should the settling
process die before its fold, the entries wait, untrimmed (settle.lua never trims past the cursor),
for the account's next settlement or read, by any process.
"""

import asyncio
import logging
import os
import secrets
import weakref
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import orjson

from metering.layout import AccountKeys
from metering.rollups import GRANULARITIES, Granularity, bucket_start, field_prefix, next_bucket
from metering.scripts import Scripts
from metering.transport.client import STORE_ERRORS

log = logging.getLogger("metering.rollups")

DAY = 86_400
RETENTION = (7 * DAY, 90 * DAY, 730 * DAY, 730 * DAY)  # minute, hour, day and month buckets
MAX_RUNS = 10_000  # runs of `batch` entries one fold reads at most (10 million records)
LEASE_MS = 2000  # a background fold's hold on an account against other processes' (see run)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Sums:
    """One bucket's increments by field, and the newest record time in it."""

    __slots__ = ("fields", "newest")

    def __init__(self) -> None:
        self.fields: defaultdict[str, int] = defaultdict(int)
        self.newest = 0.0


class RollupFold:
    def __init__(
        self,
        scripts: Scripts,
        *,
        retention_seconds: tuple[int, ...] = RETENTION,
        batch: int = 1000,
        lease_ms: int = LEASE_MS,
    ) -> None:
        """`lease_ms`: how long this process's background fold of an account keeps others'
        background folds of it away (renewed by each of its passes)."""
        self._scripts = scripts
        self._holder = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._lease_ms = lease_ms
        self._retention = dict(zip(GRANULARITIES, retention_seconds, strict=True))
        self._batch = batch
        self._due: set[str] = set()
        # One fold of an account at a time in this process: a read waits for the background
        # fold under way instead of racing it for the same entries.
        self._folding: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def mark(self, account_id: str) -> None:
        """This account has entries to fold: the next pass of `run` folds it."""
        self._due.add(account_id)

    async def fold(self, account_id: str, *, background: bool = False) -> int:
        """Count every entry settled so far into the rollups; how many this call counted.
        `background`: not when another process's background fold holds the account's lease
        (it counts them); the account then stays marked here."""
        lock = self._folding.get(account_id)
        if lock is None:
            lock = self._folding[account_id] = asyncio.Lock()
        async with lock:
            counted = await self._fold(AccountKeys(account_id), background)
        if counted is None:
            self._due.add(account_id)
            return 0
        return counted

    async def run(self, interval: float) -> None:
        """Fold the accounts marked since the last pass, every `interval` seconds, until
        cancelled."""
        while True:
            await asyncio.sleep(interval)
            await self.fold_marked()

    async def fold_marked(self) -> None:
        """One pass over the accounts marked since the last: an account whose fold failed
        (Redis away) stays marked. Whatever else fails is logged, and the pass goes on: a fold
        that stopped for good would also stop the trimming of the streams it has not counted."""
        due, self._due = self._due, set()
        for account_id in due:
            try:
                await self.fold(account_id, background=True)
            except STORE_ERRORS as exc:
                self._due.add(account_id)
                log.warning("activity rollups not folded yet: redis %s", type(exc).__name__)
            except Exception:
                self._due.add(account_id)
                log.exception("activity rollups of an account not folded")

    async def _fold(self, k: AccountKeys, background: bool) -> int | None:
        """None: another process's background fold has the lease."""
        counted = 0
        holder = self._holder if background else ""
        for _ in range(MAX_RUNS):
            read = await self._scripts.fold_read(
                keys=[k.rollup_cursor, k.usage_stream, k.rollup_lease],
                args=[self._batch, holder, self._lease_ms],
            )
            if len(read) == 1:
                return None
            cursor, entries = read
            if not entries:
                break
            buckets = self._sums(k, entries)
            keys, args = [k.rollup_cursor], [cursor, entries[-1][0]]
            for key, sums in buckets.items():
                keys.append(key)
                args += [sums[0], len(sums[1])]
                for name, amount in sums[1].items():
                    args += [name, amount]
            # Not applied: another fold moved the cursor first; read again from where it is.
            applied = await self._scripts.fold_apply(keys=keys, args=args)
            if applied:
                counted += sum(1 for _, fields in entries if _rollup_time(fields) is not None)
                if len(entries) < self._batch:
                    break
        return counted

    def _sums(
        self, k: AccountKeys, entries: Iterable[Any]
    ) -> dict[str, tuple[int, dict[str, int]]]:
        """Each bucket's (seconds to live, increments) for a run of stream entries."""
        buckets: dict[tuple[Granularity, int], _Sums] = {}
        for _, fields in entries:
            when = _rollup_time(fields)
            if when is None:
                continue  # written by a settlement that rolled it up itself
            try:
                record = orjson.loads(_field(fields, "r"))
                prefix = field_prefix(record["model"], record["provider_name"], record["key_hash"])
                amounts = (
                    ("s", int(record["cost"])),
                    ("p", int(record["tokens_prompt"])),
                    ("c", int(record["tokens_completion"])),
                    ("r", int(record["native_tokens_reasoning"])),
                    ("n", 1),
                )
            except (ValueError, KeyError, TypeError):  # not a record: passed over, not retried
                log.error("a usage stream entry that is not a record was not counted")
                continue
            for granularity in GRANULARITIES:
                start = bucket_start(granularity, when)
                sums = buckets.get((granularity, start))
                if sums is None:
                    sums = buckets[(granularity, start)] = _Sums()
                sums.newest = max(sums.newest, when)
                for letter, amount in amounts:
                    if amount:
                        sums.fields[prefix + letter] += amount
        out: dict[str, tuple[int, dict[str, int]]] = {}
        for (kind, start), sums in buckets.items():
            # A bucket lives its retention after its end, counted from its newest record's time.
            ttl = int(next_bucket(kind, start) - sums.newest) + self._retention[kind]
            if ttl > 0:
                out[k.rollup(kind, start)] = (ttl, dict(sums.fields))
        return out


def _field(fields: Any, name: str) -> Any:
    """A stream entry's field, from a script's reply: a flat [name, value, ...] list."""
    for i in range(0, len(fields) - 1, 2):
        if _text(fields[i]) == name:
            return fields[i + 1]
    return None


def _rollup_time(fields: Any) -> float | None:
    """None: not the fold's to count (written by a settlement that counted it, or garbled)."""
    try:
        return int(_field(fields, "t")) / 1000
    except (TypeError, ValueError):
        return None
