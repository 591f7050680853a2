"""The gateway's HTTP/1.1 client for providers: a pool of keep-alive connections per provider
(each one: provider_connection.py), a request written in one call.

Why not aiohttp's ClientSession: its general machinery (request and response objects, cookie
jar, auto headers, a task to write each body, timer contexts) was about a fifth of the gateway's
CPU per request under `make bench` (README, Performance), more than admission or settlement.
A provider hop needs one thing: POST a JSON body to a fixed origin and relay the answer.
"""

import asyncio
import ssl
from urllib.parse import urlsplit

from gateway.proxy.forward.provider_connection import (
    ProviderConnection,
    ProviderResponse,
    UpstreamBroken,
)

IDLE_SECONDS = 30.0  # a kept-alive connection unused this long is closed, not reused
KEY_AS_X_API_KEY = frozenset(("/messages",))  # Anthropic's Messages API


def _lines(fields: dict[str, str]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in fields.items()).encode("latin-1")


class ProviderPool:
    """Keep-alive connections to one provider's origin, and the request head for each path
    made once (the provider's secret goes in it: never logged, never in an error). `tls`
    replaces the system certificate store for an https origin (a private CA, tests)."""

    def __init__(
        self,
        name: str,
        base_url: str,
        headers: dict[str, str],
        *,
        connect_timeout: float,
        read_timeout: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"provider {name}: base_url must be an http(s) URL")
        self.name = name
        self.read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._tls = (tls or ssl.create_default_context()) if url.scheme == "https" else None
        self._prefix = url.path.rstrip("/")
        host = f"[{self._host}]" if ":" in self._host else self._host
        default_port = self._port == (443 if self._tls else 80)
        authority = host if default_port else f"{host}:{self._port}"
        fixed = {
            "Host": authority,
            "Accept": "*/*",
            "Accept-Encoding": "gzip, deflate",
            **headers,
        }
        for field, value in fixed.items():
            if any(c in value for c in "\r\n\0"):  # would end the head early: a second request
                raise ValueError(f"provider {name}: the {field} header has a line break in it")
        self._fields = _lines(fixed)
        # Anthropic's API takes the key as `x-api-key` (a Bearer there is an OAuth token).
        bearer = fixed.pop("Authorization", "")
        if bearer:
            fixed["x-api-key"] = bearer.removeprefix("Bearer ")
        self._key_fields = _lines(fixed)
        self._heads: dict[str, bytes] = {}
        self._idle: list[ProviderConnection] = []
        self._open: set[ProviderConnection] = set()
        self._retired = False
        self.loop = asyncio.get_running_loop()

    async def post(self, path: str, body: bytes, headers: bytes = b"") -> ProviderResponse:
        """POST `body` to the provider's `path`, with `headers` (lines ending in CRLF) beside
        the fixed ones; returns once the answer's head is in. Raises UpstreamBroken; a cancelled
        call closes its connection."""
        head = self._heads.get(path)
        if head is None:
            request_line = f"POST {self._prefix}{path} HTTP/1.1\r\n".encode("latin-1")
            fields = self._key_fields if path in KEY_AS_X_API_KEY else self._fields
            head = self._heads[path] = request_line + fields
        head += headers + b"Content-Length: %d\r\n\r\n" % len(body)
        connection = self._checkout() or await self._connect()
        try:
            return await connection.request(head, body)
        except BaseException:
            connection.abort()
            connection.release()
            raise

    def _checkout(self) -> ProviderConnection | None:
        now = self.loop.time()
        while self._idle:
            connection = self._idle.pop()
            transport = connection.transport
            if (
                not connection.closed
                and transport is not None
                and not transport.is_closing()
                and now - connection.idle_since < IDLE_SECONDS
            ):
                return connection
            connection.abort()
        return None

    async def _connect(self) -> ProviderConnection:
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await self.loop.create_connection(
                    lambda: ProviderConnection(self),
                    self._host,
                    self._port,
                    ssl=self._tls,
                    server_hostname=self._host if self._tls else None,
                )
        except TimeoutError:
            raise UpstreamBroken("timeout", "no connection within the connect timeout") from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamBroken("connect", f"unreachable ({type(exc).__name__})") from None
        self._open.add(connection)
        return connection

    def retire(self) -> None:
        """Replaced (a catalog reload): idle connections close now, busy ones when released."""
        self._retired = True
        for connection in self._idle:
            connection.abort()
        self._idle.clear()

    def keep(self, connection: ProviderConnection) -> None:
        if self._retired:
            connection.abort()
            return
        now = connection.idle_since = self.loop.time()
        if self._idle and now - self._idle[0].idle_since >= IDLE_SECONDS:
            self._idle.pop(0).abort()  # the oldest, left over from a burst (one per call)
        self._idle.append(connection)

    def forget(self, connection: ProviderConnection) -> None:
        self._open.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)

    async def close(self) -> None:
        for connection in list(self._open):
            connection.abort()
        self._idle.clear()
        await asyncio.sleep(0)  # their connection_lost callbacks run
