"""Calls to providers: a pool of keep-alive connections per provider key
(gateway/proxy/forward/provider_client.py), each secret read from the environment variable the
catalog names (never from the catalog file, never logged). A provider with several keys
(`api_key_envs`) uses them in turn, passing over a key that is cooling down (cooldowns.py).

The upstream address comes only from the catalog: a request can choose a model, never a host.
"""

import asyncio
import logging
import os
from collections.abc import Iterable

from config.catalog import ProviderConfig
from gateway.observability.metrics import COOLDOWNS
from gateway.proxy.forward.cooldowns import Cooldowns
from gateway.proxy.forward.deadlines import AnswerDeadlines
from gateway.proxy.forward.egress_proxy import proxy_for
from gateway.proxy.forward.provider_client import ProviderPool
from gateway.proxy.forward.provider_connection import ProviderResponse, UpstreamBroken
from gateway.proxy.forward.provider_errors import read_capped
from gateway.proxy.forward.provider_stats import ProviderStats
from gateway.proxy.relay.redaction import Redactor

log = logging.getLogger("gateway.upstream")


class UpstreamFailure(Exception):
    """The provider could not be reached or did not answer in time; nothing was generated."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # connect | timeout | protocol | busy (its connections all in use)


class Upstream:
    def __init__(
        self,
        providers: dict[str, ProviderConfig],
        *,
        connect_timeout: float,
        read_timeout: float,
        total_timeout: float | None = None,
        other_secrets: Iterable[str] = (),
        cooldown_seconds: float = 10.0,
    ) -> None:
        """`other_secrets`: the gateway's own (admin token, webhook secrets), which no answer
        relayed to a client may carry either."""
        self._providers = providers
        # read_timeout catches a provider gone silent; one that trickles bytes forever is cut
        # off by `deadlines` (see gateway/proxy/forward/deadlines.py).
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self.deadlines = AnswerDeadlines(total_timeout)
        self.stats = ProviderStats()  # what `provider.sort` orders by
        self.cooldowns = Cooldowns(cooldown_seconds)
        self._pools: dict[str, list[ProviderPool]] = {}
        self._auth = {name: self._headers(p) for name, p in providers.items()}
        self._other_secrets = list(other_secrets)
        self._secrets: set[str] = set()
        self.redactor = self._redactor()

    def _headers(self, provider: ProviderConfig) -> list[dict[str, str]]:
        """One set of request headers per key the provider has (one without a key if none)."""
        found = []
        for env in provider.key_envs:
            secret = os.environ.get(env)
            secret = secret.strip() if secret else secret  # a secret file's trailing newline
            if not secret:
                log.warning("provider %s: environment variable %s is not set", provider.name, env)
                continue
            found.append({"Content-Type": "application/json", "Authorization": f"Bearer {secret}"})
        if not found and provider.key_envs:
            log.warning("provider %s: no key is set; calling it without one", provider.name)
        return found or [{"Content-Type": "application/json"}]

    def _redactor(self) -> Redactor:
        """Every key ever used (a reload may drop one while its answers are still relayed)."""
        for headers in self._auth.values():
            for h in headers:
                if "Authorization" in h:
                    self._secrets.add(h["Authorization"].removeprefix("Bearer "))
        return Redactor([*sorted(self._secrets), *self._other_secrets])

    def _pools_for(self, provider: ProviderConfig) -> list[ProviderPool]:
        proxy = proxy_for(provider.base_url, provider.proxy)  # checked at start (cli.py)
        if proxy is not None and proxy.secret:
            self._secrets.add(proxy.secret)
        return [
            ProviderPool(
                provider.name,
                provider.base_url,
                headers,
                connect_timeout=self._connect_timeout,
                read_timeout=self._read_timeout,
                max_connections=provider.max_connections,
                proxy=proxy,
            )
            for headers in self._auth[provider.name]
        ]

    async def start(self) -> None:
        self.deadlines.start()
        for provider in self._providers.values():
            self._pools[provider.name] = self._pools_for(provider)
        self.redactor = self._redactor()  # with the proxies' passwords

    def update(self, providers: dict[str, ProviderConfig]) -> None:
        """The catalog was reloaded: new pools for the providers that are new or changed (their
        address or keys); the old pools close their connections as their requests finish."""
        old = self._providers
        self._providers = providers
        for name in [n for n in self._pools if providers.get(n) != old.get(n)]:
            for pool in self._pools.pop(name):
                pool.retire()
            self._auth.pop(name, None)
        for name, provider in providers.items():
            if name not in self._pools:
                self._auth[name] = self._headers(provider)
                self._pools[name] = self._pools_for(provider)
        self.redactor = self._redactor()

    async def close(self) -> None:
        await self.deadlines.stop()
        for pools in self._pools.values():
            for pool in pools:
                await pool.close()
        self._pools.clear()

    def key_count(self, provider: ProviderConfig) -> int:
        return len(self._auth.get(provider.name, ())) or 1

    def next_key(self, provider: ProviderConfig) -> int:
        keys = self.key_count(provider)
        return 0 if keys == 1 else self.cooldowns.next_key(provider.name, keys)

    def cooling(self, provider: ProviderConfig, model: str) -> bool:
        return self.cooldowns.cooling(provider.name, model, self.key_count(provider))

    def warm_first(
        self, model: str, providers: tuple[ProviderConfig, ...]
    ) -> tuple[ProviderConfig, ...]:
        """The providers not cooling down for `model` first, each group in its order."""
        if not self.cooldowns.any():
            return providers
        cooling = [self.cooling(p, model) for p in providers]
        warm = [p for p, cool in zip(providers, cooling, strict=True) if not cool]
        return (*warm, *(p for p, cool in zip(providers, cooling, strict=True) if cool))

    def cool_after(
        self,
        provider: ProviderConfig,
        model: str,
        key: int,
        what: int | str,
        retry_after: str | None,
    ) -> None:
        trouble = self.cooldowns.after(provider.name, model, key, what, retry_after)
        if trouble is not None:
            COOLDOWNS.labels(provider.name, trouble).inc()

    async def post(
        self, provider: ProviderConfig, path: str, body: bytes, key: int = 0, headers: bytes = b""
    ) -> ProviderResponse:
        """POST to the provider. Its whole answer is due `total_timeout` seconds from now: the
        caller reads the rest with `read()` (or, for a stream, by `exchange.upstream_deadline`
        after `deadlines.forget()`), and releases the response."""
        try:
            pools = self._pools.get(provider.name)
            if not pools:  # taken out of the catalog while this request was being served
                raise UpstreamBroken("connect", "no longer in the catalog")
            return await pools[key % len(pools)].post(path, body, headers)
        except asyncio.CancelledError:
            if self.deadlines.took_too_long():
                raise UpstreamFailure("timeout", f"provider {provider.name} timed out") from None
            raise
        except UpstreamBroken as exc:
            if exc.kind == "protocol":  # the provider's own bytes may be quoted: logs only
                log.warning("provider %s: %s", provider.name, self.redactor.text(str(exc)))
            raise UpstreamFailure(exc.kind, _failure_message(provider.name, exc)) from None

    async def read(self, response: ProviderResponse, cap: int) -> bytes:
        """The rest of an answer `post` began, by its deadline (else TimeoutError), at most
        `cap` bytes (else AnswerTooLarge)."""
        try:
            return await read_capped(response, cap)
        except asyncio.CancelledError:
            if self.deadlines.took_too_long():
                raise TimeoutError("the provider's whole answer took too long") from None
            raise
        finally:
            self.deadlines.forget()


def _failure_message(provider: str, exc: UpstreamBroken) -> str:
    if exc.kind == "busy":
        return f"provider {provider} is busy: {exc}; try again shortly"
    if exc.kind == "timeout":
        return f"provider {provider} timed out"
    if exc.kind == "connect":
        return f"provider {provider} is unreachable"
    return f"provider {provider} sent an answer that is not valid HTTP, or closed the connection"
