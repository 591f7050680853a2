"""Bearer keys: the secret is hashed at once and only its sha256 is looked up or kept.

The hash -> account mapping never changes once written, so the cache may keep it for a while; the
key's own state (disabled, expired) is read fresh by the admission script on every request.
"""

import hashlib
import hmac
import time

from aiohttp import web

from gateway.http.errors import ApiError
from gateway.http.key_guessing import KEY_GUESSING
from metering.accounts import AccountStore

_MAX_SECRET_LEN = 512


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def key_hash_of(request: web.Request, x_api_key: bool = False) -> str:
    """The key's hash; with `x_api_key`, the key may come as Anthropic's clients send it."""
    token = bearer_token(request)
    if token is None and x_api_key:
        token = request.headers.get("x-api-key", "").strip() or None
    if token is None:
        raise ApiError(
            401, "missing API key: send 'Authorization: Bearer <key>'", "invalid_api_key"
        )
    if len(token) > _MAX_SECRET_LEN:
        raise ApiError(401, "invalid API key", "invalid_api_key")
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class KeyCache:
    """Bounded, short-lived cache of key hash -> account id (None: no such key)."""

    def __init__(self, store: AccountStore, ttl: float, max_entries: int = 100_000) -> None:
        self._store = store
        self._ttl = ttl
        self._max = max_entries
        self._entries: dict[str, tuple[float, str | None]] = {}

    async def account_of(self, key_hash: str) -> str | None:
        now = time.monotonic()
        hit = self._entries.get(key_hash)
        if hit is not None and hit[0] > now:
            return hit[1]
        account_id = await self._store.account_of_key(key_hash)
        if self._ttl > 0:
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[key_hash] = (now + self._ttl, account_id)
        return account_id

    def forget(self, key_hash: str) -> None:
        self._entries.pop(key_hash, None)


async def authenticate(
    request: web.Request, cache: KeyCache, x_api_key: bool = False
) -> tuple[str, str]:
    """(account id, key hash) for a bearer key that exists; its state is checked by the caller.
    An address that keeps sending unknown keys is slowed down (see gateway.http.key_guessing)."""
    guard = request.app[KEY_GUESSING]
    guard.check(request)
    key_hash = key_hash_of(request, x_api_key)
    account_id = await cache.account_of(key_hash)
    if account_id is None:
        await guard.failed(request)
        raise ApiError(401, "invalid API key", "invalid_api_key")
    return account_id, key_hash


def admin_token_matches(request: web.Request, expected: str) -> bool:
    token = bearer_token(request) or ""
    # aiohttp keeps undecodable header bytes as surrogates; they must compare, not crash.
    return hmac.compare_digest(
        token.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )
