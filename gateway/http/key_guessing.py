"""Slow down key guessing: requests with an API key that does not exist are counted per client
address against the limits file's `match = "invalid_key"` limits; past one, that address gets
429 until its window ends.

Valid requests cost nothing here: the count is only touched on a failed lookup, and a process
remembers the addresses it has seen go over, until their window ends.
"""

import time

from aiohttp import web

from gateway.http.errors import ApiError
from gateway.limits import LIMITS
from gateway.state import CLOCK, SERVICES
from ratelimit.policy import CompiledLimit
from ratelimit.windows import seconds_until_reset, window_reset

MAX_REMEMBERED = 100_000


class KeyGuessing:
    def __init__(self) -> None:
        self._blocked: dict[str, tuple[float, CompiledLimit]] = {}  # address -> (until, limit)

    def check(self, request: web.Request) -> None:
        address = request.remote or "unknown"
        blocked = self._blocked.get(address)
        if blocked is None:
            return
        until, limit = blocked
        if time.time() >= until:
            self._blocked.pop(address, None)
            return
        raise _refusal(limit, request.app[CLOCK].now())

    async def failed(self, request: web.Request) -> None:
        """Count the failure; raise 429 when it takes the address over a limit."""
        address = request.remote or "unknown"
        now = request.app[CLOCK].now()
        store = request.app[SERVICES].limits
        for limit in request.app[LIMITS].policy.invalid_key_limits():
            count = await store.count_invalid_key(address, limit, now)
            if count > limit.allowed_for(0) and not limit.limit.shadow:
                if len(self._blocked) >= MAX_REMEMBERED:
                    self._blocked.clear()
                wait = window_reset(limit.window, now) - now
                self._blocked[address] = (time.time() + wait, limit)
                raise _refusal(limit, now)


def _refusal(limit: CompiledLimit, now: float) -> ApiError:
    wait = seconds_until_reset(limit.window, now)
    return ApiError(
        429,
        f"too many requests with invalid API keys from this address; try again in {wait} s",
        "rate_limit_exceeded",
        headers={"Retry-After": str(wait)},
        limit=limit.name,
    )


KEY_GUESSING = web.AppKey("key_guessing", KeyGuessing)
