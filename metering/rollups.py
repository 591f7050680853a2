"""Activity rollups: what is added up per time bucket, and how charts read it.

Each settled request adds its spend, prompt, completion and reasoning tokens and one request to
four buckets (its minute, hour, day and month, UTC), under a field that names its model, provider
and key; the sums are folded from the usage stream after settlement (metering.rollup_fold). A
chart reads one hash per bucket in its range (30 daily buckets for a month) and never touches raw
records, so it costs the same for ten requests or ten million.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from metering.layout import AccountKeys
from metering.transport.client import AnyRedis

if TYPE_CHECKING:
    from metering.rollup_fold import RollupFold

Granularity = Literal["minute", "hour", "day", "month"]
GRANULARITIES: tuple[Granularity, ...] = ("minute", "hour", "day", "month")
SEPARATOR = "\x1f"  # between model, provider and key in a rollup field
METRIC_MARK = "\x1e"  # before the metric letter
MAX_BUCKETS = 2000
_SECONDS = {"minute": 60, "hour": 3600, "day": 86_400}


def bucket_start(granularity: Granularity, when: float) -> int:
    if granularity == "month":
        return _month_start(when)
    size = _SECONDS[granularity]
    return int(when // size) * size


_month: list[int] = [0, 0]  # [start, next start) of the month asked for last: every settlement asks


def _month_start(when: float) -> int:
    start, end = _month
    if start <= when < end:
        return start
    t = datetime.fromtimestamp(when, UTC)
    start = int(datetime(t.year, t.month, 1, tzinfo=UTC).timestamp())
    _month[:] = [start, next_bucket("month", start)]
    return start


def next_bucket(granularity: Granularity, start: int) -> int:
    if granularity == "month":
        t = datetime.fromtimestamp(start, UTC)
        year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
        return int(datetime(year, month, 1, tzinfo=UTC).timestamp())
    return start + _SECONDS[granularity]


def buckets_between(granularity: Granularity, start: float, end: float) -> list[int]:
    """Bucket starts from the one holding `start` up to (not including) `end`."""
    out: list[int] = []
    current = bucket_start(granularity, start)
    while current < end and len(out) <= MAX_BUCKETS:
        out.append(current)
        current = next_bucket(granularity, current)
    return out


def field_prefix(model: str, provider: str, key_hash: str) -> str:
    return f"{model}{SEPARATOR}{provider}{SEPARATOR}{key_hash}{METRIC_MARK}"


@dataclass
class Totals:
    spend: int = 0  # nanodollars
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    requests: int = 0

    def add(self, other: "Totals") -> None:
        self.spend += other.spend
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.requests += other.requests


_METRIC_FIELDS = {
    "s": "spend",
    "p": "prompt_tokens",
    "c": "completion_tokens",
    "r": "reasoning_tokens",
    "n": "requests",
}


@dataclass
class Bucket:
    start: int
    by_combo: dict[tuple[str, str, str], Totals] = field(default_factory=dict)


class Rollups:
    def __init__(self, redis: AnyRedis, fold: "RollupFold") -> None:
        self._redis = redis
        self._fold = fold

    async def read(
        self, account_id: str, granularity: Granularity, starts: list[int]
    ) -> list[Bucket]:
        """The buckets with every request settled so far in them: the account's records not yet
        counted are folded first (see metering.rollup_fold)."""
        await self._fold.fold(account_id)
        k = AccountKeys(account_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            for start in starts:
                pipe.hgetall(k.rollup(granularity, start))
            raw = await pipe.execute()
        buckets = []
        for start, fields in zip(starts, raw, strict=True):
            bucket = Bucket(start)
            for name, value in fields.items():
                combo_text, _, metric = str(name).rpartition(METRIC_MARK)
                parts = combo_text.split(SEPARATOR)
                if len(parts) != 3 or metric not in _METRIC_FIELDS:
                    continue
                combo = (parts[0], parts[1], parts[2])
                totals = bucket.by_combo.setdefault(combo, Totals())
                setattr(
                    totals,
                    _METRIC_FIELDS[metric],
                    getattr(totals, _METRIC_FIELDS[metric]) + int(value),
                )
            buckets.append(bucket)
        return buckets


GroupBy = Literal["model", "provider", "key", "none"]
_GROUP_INDEX = {"model": 0, "provider": 1, "key": 2}


@dataclass(frozen=True, slots=True)
class Filters:
    model: str | None = None
    provider: str | None = None
    key_hash: str | None = None

    def admit(self, combo: tuple[str, str, str]) -> bool:
        return (
            (self.model is None or combo[0] == self.model)
            and (self.provider is None or combo[1] == self.provider)
            and (self.key_hash is None or combo[2] == self.key_hash)
        )


def summarize(
    buckets: list[Bucket], filters: Filters, group_by: GroupBy
) -> tuple[list[tuple[int, str | None, Totals]], Totals]:
    """Rows (bucket start, group value, totals) in time order, and the totals of the range.
    Without a grouping every bucket has a row, zeros included, so a chart has no gaps."""
    rows: list[tuple[int, str | None, Totals]] = []
    total = Totals()
    for bucket in buckets:
        groups: dict[str | None, Totals] = {}
        if group_by == "none":
            groups[None] = Totals()
        for combo, totals in bucket.by_combo.items():
            if not filters.admit(combo):
                continue
            group = None if group_by == "none" else combo[_GROUP_INDEX[group_by]]
            groups.setdefault(group, Totals()).add(totals)
            total.add(totals)
        for group in sorted(groups, key=lambda g: g or ""):
            rows.append((bucket.start, group, groups[group]))
    return rows, total


def by_endpoint(buckets: list[Bucket], filters: Filters) -> list[tuple[int, str, str, Totals]]:
    """Rows (bucket start, model, provider, totals) in time order, then by model and provider:
    one per model and provider that served in the bucket (OpenRouter's activity rows, whose
    endpoint is a model at a provider). Buckets without requests have none."""
    rows: list[tuple[int, str, str, Totals]] = []
    for bucket in buckets:
        groups: dict[tuple[str, str], Totals] = {}
        for combo, totals in bucket.by_combo.items():
            if filters.admit(combo):
                groups.setdefault((combo[0], combo[1]), Totals()).add(totals)
        rows.extend((bucket.start, *endpoint, groups[endpoint]) for endpoint in sorted(groups))
    return rows
