"""Providers, and provider keys, cooling down after a 429 or a failure: passed over while another
can serve, and tried last rather than never.

- A 429 cools the key that met it (providers rate-limit per key) for the provider's Retry-After
  (seconds, or an HTTP date), else `provider_cooldown_seconds`; a refusal of the key (401, 403)
  cools that key ten times as long (an operator has to act).
- A 5xx cools the provider for that model (a provider's trouble with one model says little of
  its others), a provider that cannot be reached or times out cools for every model; both for
  `provider_cooldown_seconds`.
No cooldown lasts longer than MAX_SECONDS, whatever a Retry-After says. Each process keeps its
own: a gateway learns that a provider is busy from its own requests.
"""

import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

MAX_SECONDS = 600.0
KEY_REFUSED_FACTOR = 10
EVERY_MODEL = ""


class Cooldowns:
    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._until: dict[tuple[str, str | int], float] = {}  # (provider, model or key) -> end
        self._turn: dict[str, int] = {}

    def after(
        self, provider: str, model: str, key: int, what: int | str, retry_after: str | None
    ) -> str | None:
        """Cool what a failed try says is in trouble; returns which (for the metrics), or None."""
        if what == 429:
            wait = retry_after_seconds(retry_after)
            self._cool((provider, key), self.seconds if wait is None else wait)
            return "key_rate_limited"
        if what in (401, 403):
            self._cool((provider, key), self.seconds * KEY_REFUSED_FACTOR)
            return "key_refused"
        if isinstance(what, int):
            if what >= 500:
                self._cool((provider, model), self.seconds)
                return "provider_error"
            return None
        self._cool((provider, EVERY_MODEL), self.seconds)
        return "unreachable"

    def any(self) -> bool:
        """Anything cooling down, or that was (the common case, none, is one check)."""
        return bool(self._until)

    def _cool(self, what: tuple[str, str | int], seconds: float) -> None:
        if seconds <= 0 or self.seconds <= 0:
            return
        until = self._clock() + min(seconds, MAX_SECONDS)
        self._until[what] = max(until, self._until.get(what, 0.0))

    def _warm(self, what: tuple[str, str | int], now: float) -> bool:
        until = self._until.get(what)
        if until is None:
            return True
        if until <= now:
            del self._until[what]
            return True
        return False

    def next_key(self, provider: str, keys: int) -> int:
        """The provider's next key in turn, one not cooling down when there is one."""
        now = self._clock()
        start = self._turn.get(provider, 0)
        chosen = start % keys
        for step in range(keys):
            key = (start + step) % keys
            if self._warm((provider, key), now):
                chosen = key
                break
        self._turn[provider] = chosen + 1
        return chosen

    def cooling(self, provider: str, model: str, keys: int) -> bool:
        """The provider is cooling down for this model, or every key of it is."""
        now = self._clock()
        if not self._warm((provider, EVERY_MODEL), now) or not self._warm((provider, model), now):
            return True
        return not any(self._warm((provider, key), now) for key in range(keys))


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header's wait: delta-seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)
