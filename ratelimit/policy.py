"""Which limits a request counts against, and what each allows an account.

Compiled once per limits file: a limit's tiers in nanodollars of lifetime purchases, its UTC
window unit (none for a limit on requests in flight), and a memo of the limits that apply to each
(model, provider) pair.
"""

from dataclasses import dataclass, field
from decimal import Decimal

from config.limits import Kind, Limit, LimitsFile, TokenCount
from ratelimit.windows import Unit

NANOS_PER_USD = 10**9
UNLIMITED = -1


@dataclass(frozen=True, slots=True)
class CompiledLimit:
    limit: Limit
    unit: Unit | None  # None: a limit on requests in flight, which has no window
    tiers: tuple[tuple[int, int], ...]  # (min lifetime purchases in nanodollars, count)
    kind: Kind = "requests"
    _tiers_text: str = field(default="", init=False, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.limit.name

    @property
    def window(self) -> Unit:
        """The window of a limit that has one (requests or tokens per unit)."""
        assert self.unit is not None, f"limit {self.name} has no window"
        return self.unit

    @property
    def token_count(self) -> TokenCount:
        return self.limit.token_count

    def allowed_for(self, purchased: int) -> int:
        allowed = self.tiers[0][1]
        for floor, count in self.tiers:
            if purchased >= floor:
                allowed = count
        return allowed

    def next_tier(self, purchased: int) -> tuple[int, int] | None:
        """The next (floor, count) a purchase would unlock, if it allows more."""
        current = self.allowed_for(purchased)
        for floor, count in self.tiers:
            if floor > purchased and count > current:
                return floor, count
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
                unit=None if limit.unit is None else Unit(limit.unit),
                tiers=tuple((_nanos(floor), count) for floor, count in limit.tier_table()),
                kind=limit.kind,
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
            free_account = limit.match.free and limit.scope == "account"
            if free_account and limit.kind == "requests" and limit.unit == "day":
                return c
        return None
