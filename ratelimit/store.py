"""Rate-limit state in Redis: one counter per limit and UTC window, and an account's overrides.

Counters live in the account's slot (hash tag `{a:<account>}`, the one contract shared with
`metering`), so the admission script can check and count them atomically with the balance.
A counter's key names its window, and expires a minute after the window ends.
"""

from dataclasses import dataclass
from importlib import resources

from redis.asyncio import Redis, RedisCluster

from ratelimit.policy import UNLIMITED, CompiledLimit
from ratelimit.windows import window_start

EXPIRY_SLACK_SECONDS = 60


def admission_prelude() -> str:
    """Lua defining limits_check/limits_commit, for the admission script to call."""
    return resources.files("ratelimit").joinpath("lua", "limits.lua").read_text(encoding="utf-8")


def _tag(account_id: str) -> str:
    return f"gw:{{a:{account_id}}}:rl"


def overrides_key(account_id: str) -> str:
    return f"{_tag(account_id)}:override"


def counter_key(account_id: str, key_hash: str, limit: CompiledLimit, now: float) -> str:
    start = window_start(limit.unit, now)
    if limit.limit.scope == "key":
        return f"{_tag(account_id)}:c:{limit.name}:{key_hash[:24]}:{start}"
    return f"{_tag(account_id)}:c:{limit.name}:{start}"


@dataclass(frozen=True, slots=True)
class ScriptInputs:
    keys: list[str]
    args: list[str | int]

    @property
    def counters(self) -> list[str]:
        """The windows' counters among the keys (a lease takes slices of them)."""
        return self.keys[1:]


def admission_inputs(
    account_id: str, key_hash: str, limits: tuple[CompiledLimit, ...], now: float
) -> ScriptInputs:
    """The KEYS and ARGV the prelude reads, to append after the admission script's own."""
    keys = [overrides_key(account_id)]
    args: list[str | int] = [len(limits)]
    for limit in limits:
        keys.append(counter_key(account_id, key_hash, limit, now))
        args += _limit_args(limit)
    return ScriptInputs(keys, args)


def _limit_args(limit: CompiledLimit) -> tuple[str | int, ...]:
    """What the prelude reads of one limit (the tiers text is made once, with the limit)."""
    return (
        limit.name,
        "1" if limit.limit.shadow else "0",
        limit.unit.seconds + EXPIRY_SLACK_SECONDS,
        limit.tiers_text,
    )


class RateLimitStore:
    """Reads and operator changes outside the admission path."""

    def __init__(self, redis: "Redis | RedisCluster") -> None:
        self._redis = redis

    async def overrides(self, account_id: str) -> dict[str, int]:
        raw = await self._redis.hgetall(overrides_key(account_id))
        return {str(k): int(v) for k, v in raw.items()}

    async def set_overrides(self, account_id: str, changes: dict[str, int | None]) -> None:
        """`None` removes an override; UNLIMITED (-1) lifts the limit; else a count."""
        key = overrides_key(account_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            for name, value in changes.items():
                if value is None:
                    pipe.hdel(key, name)
                else:
                    pipe.hset(key, name, value)
            await pipe.execute()

    async def count_invalid_key(self, client: str, limit: CompiledLimit, now: float) -> int:
        """One more request with an unknown key from `client`, in this limit's window."""
        start = window_start(limit.unit, now)
        key = f"gw:badkey:{limit.name}:{client}:{start}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, limit.unit.seconds + EXPIRY_SLACK_SECONDS)
            count, _ = await pipe.execute()
        return int(count)

    async def usage(
        self, account_id: str, key_hash: str, limit: CompiledLimit, purchased: int, now: float
    ) -> tuple[int, int]:
        """(requests counted in the current window, requests allowed; -1 is unlimited)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(counter_key(account_id, key_hash, limit, now))
            pipe.hget(overrides_key(account_id), limit.name)
            used, override = await pipe.execute()
        allowed = limit.requests_for(purchased) if override is None else int(override)
        return int(used or 0), allowed


__all__ = ["UNLIMITED", "RateLimitStore", "ScriptInputs", "admission_inputs", "admission_prelude"]
