"""The decision on the counts the admission script returns, and the headers and message that
explain it. Works on counts alone: no Redis, no HTTP.

Headers follow common practice (`X-RateLimit-Limit`, `-Remaining`, `-Reset` in epoch
milliseconds, `Retry-After` in seconds) and the IETF draft's structured fields, e.g. for the
free daily limit with 50 a day and 12 used, 3 hours before midnight UTC:
`RateLimit-Policy: "free-per-day";q=50;w=86400` and `RateLimit: "free-per-day";r=38;t=10800`.
"""

from dataclasses import dataclass
from decimal import Decimal

from ratelimit.policy import UNLIMITED, CompiledLimit
from ratelimit.windows import Unit, seconds_until_reset, window_reset


@dataclass(frozen=True, slots=True)
class LimitState:
    limit: CompiledLimit
    count: int  # requests in the window, this one included when it was admitted
    allowed: int  # UNLIMITED for an operator's "unlimited" override

    @property
    def remaining(self) -> int:
        return max(self.allowed - self.count, 0)

    @property
    def over(self) -> bool:
        return self.allowed != UNLIMITED and self.count > self.allowed


@dataclass(frozen=True, slots=True)
class Decision:
    states: tuple[LimitState, ...]
    refused: LimitState | None  # the limit that refused the request
    now: float

    def outcome(self, state: LimitState) -> str:
        if state is self.refused:
            return "limited"
        if state.limit.limit.shadow and state.over:
            return "shadow_limited"
        return "allowed"

    def headers(self) -> dict[str, str]:
        """For the tightest enforced limit (the refusing one, when refused)."""
        enforced = [s for s in self.states if not s.limit.limit.shadow and s.allowed != UNLIMITED]
        if self.refused is not None:
            state = self.refused
        elif len(enforced) == 1:
            state = enforced[0]
        elif enforced:
            state = min(enforced, key=lambda s: (s.remaining, -s.limit.unit.seconds))
        else:
            return {}
        unit = state.limit.unit
        wait = seconds_until_reset(unit, self.now)
        remaining = state.remaining
        headers = {
            "X-RateLimit-Limit": str(state.allowed),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(window_reset(unit, self.now) * 1000),
            "RateLimit-Policy": ", ".join([_policy_item(s.limit, s.allowed) for s in enforced]),
            "RateLimit": f'"{state.limit.name}";r={remaining};t={wait}',
        }
        if self.refused is not None:
            headers["Retry-After"] = str(wait)
        return headers

    def message(self, purchased: int) -> str:
        assert self.refused is not None
        state = self.refused
        limit = state.limit
        label = describe(limit, state.allowed)
        upgrade = limit.next_tier(purchased)
        if upgrade is not None and state.allowed == limit.requests_for(purchased):
            floor, requests = upgrade
            return (
                f"{label} reached; add ${_usd(floor - purchased)} of credits to unlock "
                f"{requests} requests per {limit.unit.value}"
            )
        wait = seconds_until_reset(limit.unit, self.now)
        resets = _clock(window_reset(limit.unit, self.now))
        return f"{label} reached; it resets in {wait} s, at {resets} UTC"


_POLICY_ITEMS: dict[tuple[str, int, Unit], str] = {}


def _policy_item(limit: CompiledLimit, allowed: int) -> str:
    """`"name";q=allowed;w=seconds`, made once per limit and allowance (on every answer)."""
    key = (limit.name, allowed, limit.unit)
    item = _POLICY_ITEMS.get(key)
    if item is None:
        if len(_POLICY_ITEMS) > 4096:  # renamed limits pile up over reloads: start afresh
            _POLICY_ITEMS.clear()
        item = f'"{limit.name}";q={allowed};w={limit.unit.seconds}'
        _POLICY_ITEMS[key] = item
    return item


def describe(limit: CompiledLimit, allowed: int) -> str:
    text = limit.limit.description
    if text:
        return text.replace("{limit}", str(allowed))
    return f"Rate limit '{limit.name}' of {allowed} requests per {limit.unit.value}"


def decide(
    limits: tuple[CompiledLimit, ...], flat: list[int], refused_index: int, now: float
) -> Decision:
    """From the script's {count, allowed, ...} list and the 1-based index of a refusing limit."""
    states = tuple(
        LimitState(limit, int(flat[2 * i]), int(flat[2 * i + 1])) for i, limit in enumerate(limits)
    )
    refused = states[refused_index - 1] if refused_index else None
    return Decision(states, refused, now)


def _usd(nanos: int) -> str:
    value = (Decimal(nanos) / 10**9).quantize(Decimal("0.01"))
    return str(value).removesuffix(".00")


def _clock(epoch: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M")
