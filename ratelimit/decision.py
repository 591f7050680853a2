"""The decision on the counts the admission script returns, and the headers and message that
explain it. Works on counts alone: no Redis, no HTTP.

Headers follow common practice (`X-RateLimit-Limit`, `-Remaining`, `-Reset` in epoch
milliseconds, `Retry-After` in seconds) and the IETF draft's structured fields, e.g. for the
free daily limit with 50 a day and 12 used, 3 hours before midnight UTC:
`RateLimit-Policy: "free-per-day";q=50;w=86400` and `RateLimit: "free-per-day";r=38;t=10800`.
Token limits add what OpenAI's clients read (`x-ratelimit-limit-tokens`, `-remaining-tokens`,
`-reset-tokens` as a duration such as `6m0s`), and their policy items name their quota unit and
partition: `"tpm";q=100000;w=60;qu="tokens";pk=:YWNjdC0x:`; a concurrency limit's has no window:
`"streams";q=3;qu="concurrent-requests";pk=:YWNjdC0x:`.
"""

import base64
from dataclasses import dataclass

from ratelimit.explain import describe, refusal_message
from ratelimit.policy import UNLIMITED, CompiledLimit
from ratelimit.windows import Unit, seconds_until_reset, window_reset

IN_FLIGHT_RETRY_SECONDS = 1  # a place in flight may free at any moment


@dataclass(frozen=True, slots=True)
class LimitState:
    limit: CompiledLimit
    count: int  # what the limit counts now, this request's take included when it was admitted
    allowed: int  # UNLIMITED for an operator's "unlimited" override
    take: int = 1  # what this request takes: 1 request (or place in flight), N tokens

    @property
    def remaining(self) -> int:
        return max(self.allowed - self.count, 0)

    @property
    def over(self) -> bool:
        return self.allowed != UNLIMITED and self.count > self.allowed

    @property
    def never_fits(self) -> bool:
        """Refused with nothing counted yet, it would still be: waiting cannot help."""
        return self.allowed != UNLIMITED and self.take > self.allowed


@dataclass(frozen=True, slots=True)
class Decision:
    states: tuple[LimitState, ...]
    refused: LimitState | None  # the limit that refused the request
    now: float
    partition: tuple[str, str] = ("", "")  # (account id, key hash): the policies' `pk`

    def outcome(self, state: LimitState) -> str:
        if state is self.refused:
            return "limited"
        if state.limit.limit.shadow and state.over:
            return "shadow_limited"
        return "allowed"

    def headers(self) -> dict[str, str]:
        """For the tightest enforced limit of each kind (the refusing one, when refused)."""
        enforced = [s for s in self.states if not s.limit.limit.shadow and s.allowed != UNLIMITED]
        if not enforced:
            return {}
        requests = _tightest([s for s in enforced if s.limit.kind == "requests"], self.refused)
        tokens = _tightest([s for s in enforced if s.limit.kind == "tokens"], self.refused)
        shown = self.refused or requests or tokens or enforced[0]
        headers: dict[str, str] = {}
        if requests is not None:
            unit = requests.limit.window
            headers["X-RateLimit-Limit"] = str(requests.allowed)
            headers["X-RateLimit-Remaining"] = str(requests.remaining)
            headers["X-RateLimit-Reset"] = str(window_reset(unit, self.now) * 1000)
        if tokens is not None:
            headers["x-ratelimit-limit-tokens"] = str(tokens.allowed)
            headers["x-ratelimit-remaining-tokens"] = str(tokens.remaining)
            headers["x-ratelimit-reset-tokens"] = _duration(
                window_reset(tokens.limit.window, self.now) - self.now
            )
        headers["RateLimit-Policy"] = ", ".join([self._policy_item(s) for s in enforced])
        headers["RateLimit"] = self._current_item(shown)
        if self.refused is not None:
            headers["Retry-After"] = str(self._wait(self.refused))
            if self.refused.never_fits:
                headers["x-should-retry"] = "false"
        return headers

    def message(self, purchased: int, advice: str = "") -> str:
        """The 429's message; `advice` (the caller's: a `max_tokens` that would fit) ends it."""
        assert self.refused is not None
        return refusal_message(self.refused, purchased, self.now, advice)

    def _wait(self, state: LimitState) -> int:
        unit = state.limit.unit
        return IN_FLIGHT_RETRY_SECONDS if unit is None else seconds_until_reset(unit, self.now)

    def _current_item(self, state: LimitState) -> str:
        item = f'"{state.limit.name}";r={state.remaining}'
        if state.limit.unit is not None:
            item += f";t={seconds_until_reset(state.limit.unit, self.now)}"
        if state.limit.kind != "requests":
            item += f";pk={self._partition(state.limit)}"
        return item

    def _policy_item(self, state: LimitState) -> str:
        limit = state.limit
        if limit.kind == "requests":
            return _policy_item(limit, state.allowed)
        item = f'"{limit.name}";q={state.allowed}'
        if limit.unit is not None:
            item += f";w={limit.unit.seconds}"
        unit = "tokens" if limit.kind == "tokens" else "concurrent-requests"
        return f'{item};qu="{unit}";pk={self._partition(limit)}'

    def _partition(self, limit: CompiledLimit) -> str:
        """The draft's partition key, a byte sequence: the account, or the key's hash."""
        account_id, key_hash = self.partition
        value = key_hash[:24] if limit.limit.scope == "key" else account_id
        return f":{base64.b64encode(value.encode()).decode()}:"


def _tightest(states: list[LimitState], refused: LimitState | None) -> LimitState | None:
    if refused is not None and refused in states:
        return refused
    if len(states) <= 1:
        return states[0] if states else None
    return min(states, key=lambda s: (s.remaining, -s.limit.window.seconds))


_POLICY_ITEMS: dict[tuple[str, int, Unit], str] = {}


def _policy_item(limit: CompiledLimit, allowed: int) -> str:
    """`"name";q=allowed;w=seconds`, made once per limit and allowance (on every answer)."""
    key = (limit.name, allowed, limit.window)
    item = _POLICY_ITEMS.get(key)
    if item is None:
        if len(_POLICY_ITEMS) > 4096:  # renamed limits pile up over reloads: start afresh
            _POLICY_ITEMS.clear()
        item = f'"{limit.name}";q={allowed};w={limit.window.seconds}'
        _POLICY_ITEMS[key] = item
    return item


def _duration(seconds: float) -> str:
    """OpenAI's form of a wait: `59.5s` under a minute... `6m0s`, `1h2m3s`; `250ms` under 1 s."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 0)}ms"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def decide(
    limits: tuple[CompiledLimit, ...],
    flat: list[int],
    refused_index: int,
    now: float,
    takes: tuple[int, ...] = (),
    partition: tuple[str, str] = ("", ""),
) -> Decision:
    """From the script's {count, allowed, ...} list and the 1-based index of a refusing limit;
    `takes`: what the request takes of each limit (1 when not given)."""
    states = tuple(
        LimitState(limit, int(flat[2 * i]), int(flat[2 * i + 1]), takes[i] if takes else 1)
        for i, limit in enumerate(limits)
    )
    refused = states[refused_index - 1] if refused_index else None
    return Decision(states, refused, now, partition)


__all__ = ["Decision", "LimitState", "decide", "describe"]
