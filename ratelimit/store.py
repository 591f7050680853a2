"""Rate-limit state in Redis: one counter per limit and UTC window (requests or tokens), one
sorted set of the requests in flight per concurrency limit, and an account's overrides.

They live in the account's slot (hash tag `{a:<account>}`, the one contract shared with
`metering`), so the admission script can check and count them atomically with the balance, and
the settlement script can give back what a request held. A counter's key names its window, and
expires a minute after the window ends; a request in flight is held until its reservation's
expiry (renewed while it runs), and its set expires a minute after its last one.
"""

from dataclasses import dataclass
from importlib import resources

from redis.asyncio import Redis, RedisCluster

from config.limits import TokenCount
from ratelimit.policy import UNLIMITED, CompiledLimit
from ratelimit.windows import window_start

EXPIRY_SLACK_SECONDS = 60
KIND_CODES = {"requests": "r", "tokens": "t", "concurrent": "c"}


def admission_prelude() -> str:
    """Lua defining limits_check/limits_commit, for the admission script to call."""
    return resources.files("ratelimit").joinpath("lua", "limits.lua").read_text(encoding="utf-8")


def _tag(account_id: str) -> str:
    return f"gw:{{a:{account_id}}}:rl"


def overrides_key(account_id: str) -> str:
    return f"{_tag(account_id)}:override"


def counter_key(account_id: str, key_hash: str, limit: CompiledLimit, now: float) -> str:
    """A window's counter; for a concurrency limit, its sorted set of requests in flight."""
    scoped = f"{limit.name}:{key_hash[:24]}" if limit.limit.scope == "key" else limit.name
    if limit.unit is None:
        return f"{_tag(account_id)}:f:{scoped}"
    kind = "t" if limit.kind == "tokens" else "c"  # a limit renamed to count otherwise starts anew
    return f"{_tag(account_id)}:{kind}:{scoped}:{window_start(limit.unit, now)}"


@dataclass(frozen=True, slots=True)
class Tokens:
    """A request's prompt and completion tokens (its worst case at admission, what it used at
    settlement), and those a limit's `count` counts."""

    prompt: int = 0
    completion: int = 0

    def of(self, count: TokenCount) -> int:
        if count == "prompt":
            return self.prompt
        if count == "completion":
            return self.completion
        return self.prompt + self.completion


@dataclass(frozen=True, slots=True)
class Hold:
    """What an admitted request holds of one limit until it settles: a place in flight, or its
    worst case in tokens in the window that admitted it."""

    key: str
    in_flight: bool
    taken: int = 0  # tokens
    count: TokenCount = "total"

    def give_back(self, prompt: int, completion: int) -> tuple[str, str, int]:
        """The settlement's (key, kind, amount) for limits_release: the place in flight, or
        the tokens used less those taken (the true-up)."""
        if self.in_flight:
            return self.key, "c", 0
        return self.key, "t", Tokens(prompt, completion).of(self.count) - self.taken


@dataclass(frozen=True, slots=True)
class ScriptInputs:
    keys: list[str]
    args: list[str | int]
    holds: tuple[Hold, ...] = ()
    takes: tuple[int, ...] = ()  # what the request takes of each limit (1 request, N tokens)

    @property
    def counters(self) -> list[str]:
        """The windows' counters among the keys (a lease takes slices of them)."""
        return self.keys[1:]


def admission_inputs(
    account_id: str,
    key_hash: str,
    limits: tuple[CompiledLimit, ...],
    now: float,
    worst: Tokens = Tokens(),
    in_flight_seconds: float = 0.0,
) -> ScriptInputs:
    """The KEYS and ARGV the prelude reads, to append after the admission script's own, and
    what the request will hold until it settles. `in_flight_seconds`: how long a place in flight
    outlives its last renewal (the reservation timeout)."""
    keys = [overrides_key(account_id)]
    args: list[str | int] = [len(limits)]
    holds: list[Hold] = []
    takes: list[int] = []
    for limit in limits:
        key = counter_key(account_id, key_hash, limit, now)
        keys.append(key)
        take = 1
        if limit.kind == "tokens":
            take = worst.of(limit.token_count)
            holds.append(Hold(key, False, take, limit.token_count))
        elif limit.kind == "concurrent":
            holds.append(Hold(key, True))
        takes.append(take)
        args += _limit_args(limit, take, in_flight_seconds)
    return ScriptInputs(keys, args, tuple(holds), tuple(takes))


def _limit_args(limit: CompiledLimit, take: int, in_flight_seconds: float) -> list[str | int]:
    """What the prelude reads of one limit (the tiers text is made once, with the limit)."""
    if limit.unit is None:
        ttl = int(in_flight_seconds) + 1 + EXPIRY_SLACK_SECONDS
    else:
        ttl = limit.unit.seconds + EXPIRY_SLACK_SECONDS
    shadow = "1" if limit.limit.shadow else "0"
    return [limit.name, shadow, ttl, limit.tiers_text, KIND_CODES[limit.kind], take]


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
        start = window_start(limit.window, now)
        key = f"gw:badkey:{limit.name}:{client}:{start}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, limit.window.seconds + EXPIRY_SLACK_SECONDS)
            count, _ = await pipe.execute()
        return int(count)

    async def usage(
        self, account_id: str, key_hash: str, limit: CompiledLimit, purchased: int, now: float
    ) -> tuple[int, int]:
        """(what is counted now, what is allowed; -1 is unlimited): requests or tokens in the
        current window, or requests in flight."""
        found = await self.usages(account_id, key_hash, (limit,), purchased, now)
        return found[0]

    async def usages(
        self,
        account_id: str,
        key_hash: str,
        limits: tuple[CompiledLimit, ...],
        purchased: int,
        now: float,
    ) -> list[tuple[int, int]]:
        """`usage` of each limit, in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for limit in limits:
                key = counter_key(account_id, key_hash, limit, now)
                if limit.unit is None:
                    pipe.zcount(key, f"({int(now * 1000)}", "+inf")
                else:
                    pipe.get(key)
            pipe.hmget(overrides_key(account_id), [limit.name for limit in limits])
            *used, overrides = await pipe.execute()
        return [
            (int(count or 0), limit.allowed_for(purchased) if over is None else int(over))
            for limit, count, over in zip(limits, used, overrides, strict=True)
        ]


__all__ = [
    "UNLIMITED",
    "Hold",
    "RateLimitStore",
    "ScriptInputs",
    "Tokens",
    "admission_inputs",
    "admission_prelude",
]
