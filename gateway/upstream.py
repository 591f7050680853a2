"""Calls to providers: one pooled aiohttp ClientSession per provider, its secret read from the
environment variable the catalog names (never from the catalog file, never logged).

The upstream address comes only from the catalog: a request can choose a model, never a host.
"""

import asyncio
import logging
import os
from collections.abc import Callable

import aiohttp

from config.catalog import ProviderConfig
from gateway.deadlines import AnswerDeadlines
from gateway.provider_errors import read_capped

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
    ) -> None:
        self._providers = providers
        # sock_read catches a provider gone silent; one that trickles bytes forever is cut off
        # by `deadlines` (see gateway/deadlines.py: cheaper than aiohttp's own `total`).
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self.deadlines = AnswerDeadlines(total_timeout)
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._auth: dict[str, dict[str, str]] = {}
        self._secrets: dict[str, str] = {}
        for name, provider in providers.items():
            secret = os.environ.get(provider.api_key_env) if provider.api_key_env else None
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

    async def start(self) -> None:
        self.deadlines.start()
        for name in self._providers:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
            self._sessions[name] = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )

    def redact(self, provider: str, text: str) -> str:
        """`text` (a provider's own words) without the provider's secret, should it quote it."""
        secret = self._secrets.get(provider)
        return text.replace(secret, "[redacted]") if secret else text

    def stream_redactor(self, provider: str) -> "Callable[[bytes], bytes] | None":
        """For a provider's stream: the same, on bytes (None when there is no secret)."""
        secret = self._secrets.get(provider)
        if not secret:
            return None
        raw = secret.encode()
        return lambda data: data.replace(raw, b"[redacted]") if raw in data else data

    async def close(self) -> None:
        await self.deadlines.stop()
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    async def post(
        self, provider: ProviderConfig, path: str, body: bytes
    ) -> aiohttp.ClientResponse:
        """POST to the provider. Its whole answer is due `total_timeout` seconds from now: the
        caller reads the rest with `read()` (or, for a stream, by `exchange.upstream_deadline`
        after `deadlines.forget()`), and releases the response."""
        session = self._sessions[provider.name]
        try:
            return await session.post(
                provider.base_url + path, data=body, headers=self._auth[provider.name]
            )
        except asyncio.CancelledError:
            if self.deadlines.took_too_long():
                raise UpstreamFailure("timeout", f"provider {provider.name} timed out") from None
            raise
        except TimeoutError:
            raise UpstreamFailure("timeout", f"provider {provider.name} timed out") from None
        except aiohttp.ClientConnectorError:
            raise UpstreamFailure("connect", f"provider {provider.name} is unreachable") from None
        except aiohttp.ClientError as exc:
            raise UpstreamFailure(
                "protocol", f"provider {provider.name} failed: {type(exc).__name__}"
            ) from None

    async def read(self, response: aiohttp.ClientResponse, cap: int) -> bytes:
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
