"""The rate limits that count a key's requests, as `GET /api/v1/key` shows them: every limit of
the account's or the key's scope, with what it allows the account (its tier, or an operator's
override), what the current window (or the requests in flight) used, and what is left."""

from config.limits import Match
from gateway.api.answers.limit_shapes import RateLimitState
from metering.periods import rfc3339
from ratelimit.policy import UNLIMITED, CompiledLimit, Policy
from ratelimit.store import RateLimitStore
from ratelimit.windows import window_reset


async def rate_limit_states(
    store: RateLimitStore,
    policy: Policy,
    account_id: str,
    key_hash: str,
    purchased: int,
    now: float,
) -> list[RateLimitState]:
    limits = tuple(c for c in policy.limits if c.limit.scope != "client")
    if not limits:
        return []
    usages = await store.usages(account_id, key_hash, limits, purchased, now)
    pairs = zip(limits, usages, strict=True)
    return [_state(limit, used, allowed, now) for limit, (used, allowed) in pairs]


def _state(compiled: CompiledLimit, used: int, allowed: int, now: float) -> RateLimitState:
    limit = compiled.limit
    unlimited = allowed == UNLIMITED
    unit = compiled.unit
    return RateLimitState(
        name=limit.name,
        description=None
        if limit.description is None
        else limit.description.replace("{limit}", "unlimited" if unlimited else str(allowed)),
        kind=compiled.kind,
        count=compiled.token_count if compiled.kind == "tokens" else None,
        scope="key" if limit.scope == "key" else "account",
        match=_match_text(limit.match),
        window=None if unit is None else unit.value,
        limit=None if unlimited else allowed,
        used=used,
        remaining=None if unlimited else max(allowed - used, 0),
        resets_at=None if unit is None else rfc3339(window_reset(unit, now)),
        shadow=limit.shadow,
    )


def _match_text(match: Match) -> str:
    if match.model is not None:
        return f"model:{match.model}"
    if match.provider is not None:
        return f"provider:{match.provider}"
    return "free" if match.free else "all"
