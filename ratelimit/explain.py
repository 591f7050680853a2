"""What a 429 says, for each kind of limit: what was reached, and what would help (a purchase
that unlocks a higher tier, the window's reset, a smaller `max_tokens`, a request ending)."""

from decimal import Decimal
from typing import TYPE_CHECKING

from ratelimit.policy import CompiledLimit
from ratelimit.windows import seconds_until_reset, window_reset

if TYPE_CHECKING:
    from ratelimit.decision import LimitState


def describe(limit: CompiledLimit, allowed: int) -> str:
    text = limit.limit.description
    if text:
        return text.replace("{limit}", str(allowed))
    return f"Rate limit '{limit.name}' of {_quantity(limit, allowed)}"


def _quantity(limit: CompiledLimit, count: int) -> str:
    """`20 requests per minute`, `1000 completion tokens per day`, `3 requests in flight at
    once`."""
    if limit.kind == "concurrent":
        return f"{count} requests in flight at once"
    token_count = limit.token_count
    counted = "tokens" if token_count == "total" else f"{token_count} tokens"
    return f"{count} {'requests' if limit.kind == 'requests' else counted} per {limit.window.value}"


def refusal_message(state: "LimitState", purchased: int, now: float, advice: str) -> str:
    limit = state.limit
    label = describe(limit, state.allowed)
    upgrade = limit.next_tier(purchased)
    if upgrade is not None and state.allowed == limit.allowed_for(purchased):
        floor, count = upgrade
        unlocked = _quantity(limit, count)
        text = f"{label} reached; add ${_usd(floor - purchased)} of credits to unlock {unlocked}"
        return _ending(text, advice)
    if limit.kind == "concurrent":
        text = (
            f"{label} reached: {state.count} requests of this limit are in flight; "
            "retry when one of them ends"
        )
        return _ending(text, advice)
    if limit.kind == "tokens":
        prefix = f"{label} reached: this request may use up to {state.take} tokens"
        if state.never_fits:
            return _ending(f"{prefix}, more than the limit allows in any window", advice)
        prefix += f" and {state.remaining} are left in this {limit.window.value}"
    else:
        prefix = f"{label} reached"
    wait = seconds_until_reset(limit.window, now)
    resets = _clock(window_reset(limit.window, now))
    return _ending(f"{prefix}; it resets in {wait} s, at {resets} UTC", advice)


def _ending(text: str, advice: str) -> str:
    return f"{text}; {advice}" if advice else text


def _usd(nanos: int) -> str:
    value = (Decimal(nanos) / 10**9).quantize(Decimal("0.01"))
    return str(value).removesuffix(".00")


def _clock(epoch: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M")
