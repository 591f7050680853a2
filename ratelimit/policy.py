"""Which limits a request counts against, and what each allows an account.

Compiled once per limits file: a limit's tiers in nanodollars of lifetime purchases, its UTC
window unit, and a memo of the limits that apply to each (model, provider) pair.
"""

from dataclasses import dataclass, field
from decimal import Decimal

from config.limits import Limit, LimitsFile
from ratelimit.windows import Unit

NANOS_PER_USD = 10**9
UNLIMITED = -1


@dataclass(frozen=True, slots=True)
class CompiledLimit:
    limit: Limit
    unit: Unit
    tiers: tuple[tuple[int, int], ...]  # (min lifetime purchases in nanodollars, requests)
    _tiers_text: str = field(default="", init=False, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.limit.name

    def requests_for(self, purchased: int) -> int:
        allowed = self.tiers[0][1]
        for floor, requests in self.tiers:
            if purchased >= floor:
                allowed = requests
        return allowed

    def next_tier(self, purchased: int) -> tuple[int, int] | None:
        """The next (floor, requests) a purchase would unlock, if it allows more."""
        current = self.requests_for(purchased)
        for floor, requests in self.tiers:
            if floor > purchased and requests > current:
                return floor, requests
        return None

    @property
    def tiers_text(self) -> str:
        """The tiers as the admission script reads them: `floor:requests;floor:requests`."""
        return self._tiers_text

    def __post_init__(self) -> None:
        text = ";".join(f"{floor}:{requests}" for floor, requests in self.tiers)
        object.__setattr__(self, "_tiers_text", text)


def _nanos(usd: Decimal) -> int:
    return int(usd * NANOS_PER_USD)


class Policy:
    def __init__(self, limits: LimitsFile) -> None:
        self.file = limits
        self.limits = tuple(
            CompiledLimit(
                limit=limit,
                unit=Unit(limit.unit),
                tiers=tuple((_nanos(floor), req) for floor, req in limit.tier_table()),
            )
            for limit in limits.limits
        )
        self._by_name = {c.name: c for c in self.limits}
        self._memo: dict[tuple[str, str, bool], tuple[CompiledLimit, ...]] = {}

    def applicable(self, model_id: str, provider: str, is_free: bool) -> tuple[CompiledLimit, ...]:
        key = (model_id, provider, is_free)
        found = self._memo.get(key)
        if found is None:
            found = tuple(
                c for c in self.limits if c.limit.match.applies(model_id, provider, is_free)
            )
            if len(self._memo) < 100_000:
                self._memo[key] = found
        return found

    def invalid_key_limits(self) -> tuple[CompiledLimit, ...]:
        """Limits on requests with a key that does not exist, per client address."""
        return tuple(c for c in self.limits if c.limit.match.invalid_key)

    def get(self, name: str) -> CompiledLimit | None:
        return self._by_name.get(name)

    def free_daily(self) -> CompiledLimit | None:
        """The account-wide daily limit on free models that `GET /api/v1/key` reports."""
        for c in self.limits:
            limit = c.limit
            if limit.match.free and limit.unit == "day" and limit.scope == "account":
                return c
        return None
