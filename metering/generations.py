"""Usage records, newest first, filtered by model, provider, key and time: the stream is read
backwards in batches, so a page costs what it scans, never the whole history."""

from collections.abc import AsyncIterator
from dataclasses import dataclass

from metering.layout import AccountKeys
from metering.rollups import Filters
from metering.transport.client import AnyRedis
from metering.usage import UsageRecord

BATCH = 500


@dataclass(frozen=True, slots=True)
class Page:
    records: list[UsageRecord]
    next_cursor: str | None  # the stream id to continue before


class Generations:
    def __init__(self, redis: AnyRedis) -> None:
        self._redis = redis

    async def newest(
        self,
        account_id: str,
        filters: Filters,
        start_ms: int,
        end_ms: int,
        limit: int,
        before: str | None = None,
        max_scan: int = 20_000,
    ) -> Page:
        """Up to `limit` records in [start_ms, end_ms), newest first, created before `before`."""
        found: list[UsageRecord] = []
        scanned = 0
        async for stream_id, record in self._backwards(account_id, start_ms, end_ms, before):
            scanned += 1
            if _matches(record, filters):
                found.append(record)
                if len(found) == limit:
                    return Page(found, stream_id)
            if scanned >= max_scan:
                return Page(found, stream_id)
        return Page(found, None)

    async def all(
        self, account_id: str, filters: Filters, start_ms: int, end_ms: int
    ) -> AsyncIterator[UsageRecord]:
        """Every matching record in the range, newest first, a batch at a time (for CSV)."""
        async for _, record in self._backwards(account_id, start_ms, end_ms, None):
            if _matches(record, filters):
                yield record

    async def _backwards(
        self, account_id: str, start_ms: int, end_ms: int, before: str | None
    ) -> AsyncIterator[tuple[str, UsageRecord]]:
        """Records whose own time is in [start_ms, end_ms), newest first. The stream's ids are
        the server's clock and only order the records; their times are the gateway's."""
        key = AccountKeys(account_id).usage_stream
        upper = f"({before}" if before else "+"
        for _ in range(100_000):
            batch = await self._redis.xrevrange(key, max=upper, min="-", count=BATCH)
            if not batch:
                return
            for stream_id, fields in batch:
                if not fields or "r" not in fields:
                    continue
                record = UsageRecord.from_json(fields["r"])
                if record.created_at_ms < start_ms:
                    return
                if record.created_at_ms < end_ms:
                    yield str(stream_id), record
            upper = f"({batch[-1][0]!s}"
            if len(batch) < BATCH:
                return


def _matches(record: UsageRecord, filters: Filters) -> bool:
    return filters.admit((record.model, record.provider_name, record.key_hash))
