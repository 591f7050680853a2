"""Calls to providers: a pool of keep-alive connections per provider
(gateway/proxy/forward/provider_client.py), its secret read from the environment variable the
catalog names (never from the catalog file, never logged).

The upstream address comes only from the catalog: a request can choose a model, never a host.
"""

import asyncio
import logging
import os
from collections.abc import Iterable

from config.catalog import ProviderConfig
from gateway.proxy.forward.deadlines import AnswerDeadlines
from gateway.proxy.forward.provider_client import ProviderPool, ProviderResponse, UpstreamBroken
from gateway.proxy.forward.provider_errors import read_capped
from gateway.proxy.forward.provider_stats import ProviderStats
from gateway.proxy.relay.redaction import Redactor

log = logging.getLogger("gateway.upstream")


class UpstreamFailure(Exception):
    """The provider could not be reached or did not answer in time; nothing was generated."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # connect | timeout | protocol


class Upstream:
    def __init__(
        self,
        providers: dict[str, ProviderConfig],
        *,
        connect_timeout: float,
        read_timeout: float,
        total_timeout: float | None = None,
        other_secrets: Iterable[str] = (),
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
        self._pools: dict[str, ProviderPool] = {}
        self._auth: dict[str, dict[str, str]] = {}
        self._secrets: dict[str, str] = {}
        for name, provider in providers.items():
            secret = os.environ.get(provider.api_key_env) if provider.api_key_env else None
            secret = secret.strip() if secret else secret  # a secret file's trailing newline
            if provider.api_key_env and not secret:
                log.warning(
                    "provider %s: environment variable %s is not set; calling it without a key",
                    name,
                    provider.api_key_env,
                )
            headers = {"Content-Type": "application/json"}
            if secret:
                headers["Authorization"] = f"Bearer {secret}"
                self._secrets[name] = secret
            self._auth[name] = headers
        self.redactor = Redactor([*self._secrets.values(), *other_secrets])

    async def start(self) -> None:
        self.deadlines.start()
        for name, provider in self._providers.items():
            self._pools[name] = ProviderPool(
                name,
                provider.base_url,
                self._auth[name],
                connect_timeout=self._connect_timeout,
                read_timeout=self._read_timeout,
            )

    async def close(self) -> None:
        await self.deadlines.stop()
        for pool in self._pools.values():
            await pool.close()
        self._pools.clear()

    async def post(self, provider: ProviderConfig, path: str, body: bytes) -> ProviderResponse:
        """POST to the provider. Its whole answer is due `total_timeout` seconds from now: the
        caller reads the rest with `read()` (or, for a stream, by `exchange.upstream_deadline`
        after `deadlines.forget()`), and releases the response."""
        try:
            return await self._pools[provider.name].post(path, body)
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
    if exc.kind == "timeout":
        return f"provider {provider} timed out"
    if exc.kind == "connect":
        return f"provider {provider} is unreachable"
    return f"provider {provider} sent an answer that is not valid HTTP, or closed the connection"
