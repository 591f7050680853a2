"""Random parts of ids made on the request path (generation, event and request ids).

The bytes are the operating system's (os.urandom), as secrets.token_hex would give, but fetched
4 KiB at a time: one getrandom call per request was about 4% of the gateway's time under load. A
forked child starts with an empty pool, so two workers never hand out the same bytes. Not for
secrets that grant access (API keys): those still come from `secrets` directly.
"""

import hashlib
import hmac
import os

_POOL_BYTES = 4096
_pool = b""
_used = 0


def random_hex(nbytes: int) -> str:
    """`nbytes` fresh random bytes as 2 * nbytes hex digits."""
    global _pool, _used
    if _used + nbytes > len(_pool):
        _pool, _used = os.urandom(max(_POOL_BYTES, nbytes)), 0
    start, _used = _used, _used + nbytes
    return _pool[start:_used].hex()


def account_in_id(kind: str, made_id: str) -> str | None:
    """The account of an id made as `<kind>-<account>-<random>` (a purchase's, a checkout's):
    such an id finds its record in the account's slot alone. None for any other text."""
    parts = made_id.split("-")
    if len(parts) != 3 or parts[0] != kind or not parts[1].isalnum() or not parts[2].isalnum():
        return None
    return parts[1]


def body_fingerprint(kind: str, *parts: object) -> str:
    """What an idempotency key is stored with: the same key again is a repeat when its body's
    fingerprint matches, a conflict when not (purchases, checkouts)."""
    text = "|".join(str(part) for part in parts)
    return hmac.new(kind.encode(), text.encode(), hashlib.sha256).hexdigest()[:32]


def _forget_pool() -> None:
    global _pool, _used
    _pool, _used = b"", 0


os.register_at_fork(after_in_child=_forget_pool)
