"""The gateway's HTTP/1.1 client for providers: a pool of keep-alive connections per provider
(each one: provider_connection.py; how one is opened: provider_dial.py), a request written in one
call.

Why not aiohttp's ClientSession: its general machinery (request and response objects, cookie
jar, auto headers, a task to write each body, timer contexts) was about a fifth of the gateway's
CPU per request under `make bench` (README, Performance), more than admission or settlement.
A provider hop needs one thing: POST a JSON body to a fixed origin and relay the answer.

Connections, as real networks need them:
- at most `max_connections` open per provider key (the catalog's, default 10,000: every open
  stream holds one, and a gateway's life is holding streams; lower it to spare a provider); a
  request that finds them all busy waits for one, up to the connect timeout (then it is a `busy`
  failure, which the route treats as the provider's trouble: the next provider, else a 503);
- an idle connection is not reused after IDLE_SECONDS, or sooner when the provider's
  `Keep-Alive: timeout=N` says it keeps it less (a second before N): servers such as uvicorn,
  hypercorn and vLLM close theirs after 5 s, and a request sent on a connection the server is
  closing fails. A sweep every SWEEP_SECONDS, while any connection is idle, closes those past
  their time (one timer a pool, none a request), and sets the pool's gauges: a request's path
  arms no timer and writes no metric for the pool;
- a request that went out on a reused connection which then closed before a single byte of the
  answer came is sent once more, on a fresh connection. That is what a stale keep-alive looks
  like, and it is safe here: the retry is the same admitted request (one generation id, one
  reservation, one settlement), so the client is charged once whatever the provider did; what the
  provider may have started on the lost connection cannot reach the client.
"""

import asyncio
import ssl
from collections import deque
from typing import cast
from urllib.parse import urlsplit

from gateway.observability.metrics import PROVIDER_CONNECTION_WAITS, PROVIDER_CONNECTIONS
from gateway.proxy.forward.egress_proxy import EgressProxy
from gateway.proxy.forward.provider_connection import (
    ProviderConnection,
    ProviderResponse,
    UpstreamBroken,
)
from gateway.proxy.forward.provider_dial import Resolver, dial, resolve_by_system

IDLE_SECONDS = 4.0  # a kept-alive connection unused this long is closed (servers: often 5 s)
SWEEP_SECONDS = 0.5
DEFAULT_MAX_CONNECTIONS = 10_000
KEY_AS_X_API_KEY = frozenset(("/messages",))  # Anthropic's Messages API


def _lines(fields: dict[str, str]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in fields.items()).encode("latin-1")


def _fixed_fields(name: str, fixed: dict[str, str]) -> tuple[bytes, bytes]:
    """The header lines every request carries, and the same for Anthropic's API, which takes the
    key as `x-api-key` (a Bearer there is an OAuth token)."""
    for field, value in fixed.items():
        if any(c in value for c in "\r\n\0"):  # would end the head early: a second request
            raise ValueError(f"provider {name}: the {field} header has a line break in it")
    keyed = dict(fixed)
    bearer = keyed.pop("Authorization", "")
    if bearer:
        keyed["x-api-key"] = bearer.removeprefix("Bearer ")
    return _lines(fixed), _lines(keyed)


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
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        resolve: Resolver = resolve_by_system,
        proxy: EgressProxy | None = None,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"provider {name}: base_url must be an http(s) URL")
        if url.username is not None:
            raise ValueError(f"provider {name}: base_url must not hold credentials")
        self.name = name
        self.read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._tls = (tls or ssl.create_default_context()) if url.scheme == "https" else None
        self.secure = self._tls is not None
        host = f"[{self._host}]" if ":" in self._host else self._host
        default_port = self._port == (443 if self._tls else 80)
        authority = host if default_port else f"{host}:{self._port}"
        self._proxy = proxy
        self._prefix = url.path.rstrip("/")
        if proxy is not None and self._tls is None:  # absolute form, to the proxy
            self._prefix = f"http://{authority}{self._prefix}"
        self._query = f"?{url.query}" if url.query else ""  # Azure's ?api-version=...
        fixed = {"Host": authority, "Accept": "*/*", "Accept-Encoding": "gzip, deflate", **headers}
        if proxy is not None and proxy.authorization and self._tls is None:
            fixed["Proxy-Authorization"] = proxy.authorization
        self._fields, self._key_fields = _fixed_fields(name, fixed)
        self._heads: dict[str, bytes] = {}
        self._idle: list[ProviderConnection] = []
        self._open: set[ProviderConnection] = set()
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._dialing = 0  # connections being opened: they count toward the limit
        self._retired = False
        self.max_connections = max_connections
        self._resolve = resolve
        self.loop = asyncio.get_running_loop()
        self._open_gauge = PROVIDER_CONNECTIONS.labels(name, "open")
        self._idle_gauge = PROVIDER_CONNECTIONS.labels(name, "idle")
        self._sweeper: asyncio.TimerHandle | None = None

    async def post(self, path: str, body: bytes, headers: bytes = b"") -> ProviderResponse:
        """POST `body` to the provider's `path`, with `headers` (lines ending in CRLF) beside
        the fixed ones; returns once the answer's head is in. Raises UpstreamBroken; a cancelled
        call closes its connection."""
        head = self._heads.get(path)
        if head is None:
            target = f"{self._prefix}{path}{self._query}"
            request_line = f"POST {target} HTTP/1.1\r\n".encode("latin-1")
            fields = self._key_fields if path in KEY_AS_X_API_KEY else self._fields
            head = self._heads[path] = request_line + fields
        head += headers + b"Content-Length: %d\r\n\r\n" % len(body)
        connection = self._checkout()
        if connection is not None:
            try:
                return await connection.request(head, body)
            except UpstreamBroken as exc:
                _discard(connection)
                if exc.kind != "protocol" or connection.received:
                    raise
                # A stale keep-alive: closed as the request went out; once more, afresh.
            except BaseException:
                _discard(connection)
                raise
        connection = await self._fresh()
        try:
            return await connection.request(head, body)
        except BaseException:
            _discard(connection)
            raise

    def _checkout(self) -> ProviderConnection | None:
        while self._idle:
            connection = self._idle.pop()
            transport = connection.transport
            if (
                not connection.closed
                and transport is not None
                and not transport.is_closing()
                and self.loop.time() < connection.idle_until
            ):
                return connection
            connection.abort()
        return None

    async def _fresh(self) -> ProviderConnection:
        """A new connection, once one may be opened: at the limit, the request waits (up to the
        connect timeout) for one to close, or takes an idle one that comes back meanwhile."""
        if self._full() and self._idle:  # room made by closing the oldest idle connection
            oldest = self._idle.pop(0)
            self._open.discard(oldest)
            self._open_gauge.set(len(self._open))
            oldest.abort()
        elif self._full():
            waited = await self._wait_for_room()
            if waited is not None:
                return waited
        return await self._connect()

    def _full(self) -> bool:
        return len(self._open) + self._dialing >= self.max_connections

    async def _wait_for_room(self) -> ProviderConnection | None:
        waits = PROVIDER_CONNECTION_WAITS
        try:
            async with asyncio.timeout(self._connect_timeout):
                while self._full():
                    room: asyncio.Future[None] = self.loop.create_future()
                    self._waiting.append(room)
                    await room
                    idle = self._checkout()
                    if idle is not None:
                        waits.labels(self.name, "reused").inc()
                        return idle
        except TimeoutError:
            waits.labels(self.name, "timed_out").inc()
            raise UpstreamBroken(
                "busy", f"all {self.max_connections} connections were busy"
            ) from None
        waits.labels(self.name, "opened").inc()
        return None

    def _room(self) -> None:
        """A connection closed or went idle: the first request waiting may go on."""
        while self._waiting:
            room = self._waiting.popleft()
            if not room.done():
                room.set_result(None)
                return

    async def _connect(self) -> ProviderConnection:
        self._dialing += 1
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, protocol = await dial(
                    lambda: ProviderConnection(self),
                    self._host,
                    self._port,
                    tls=self._tls,
                    resolve=self._resolve,
                    proxy=self._proxy,
                )
        except TimeoutError:
            raise UpstreamBroken("timeout", "no connection within the connect timeout") from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamBroken("connect", f"unreachable ({type(exc).__name__})") from None
        finally:
            self._dialing -= 1
            self._room()  # a dial that failed leaves room
        connection = cast(ProviderConnection, protocol)
        self._open.add(connection)
        self._open_gauge.set(len(self._open))
        return connection

    def retire(self) -> None:
        """Replaced (a catalog reload): idle connections close now, busy ones when released."""
        self._retired = True
        while self._idle:
            _discard(self._idle.pop())
        self._idle_gauge.set(0)

    def keep(self, connection: ProviderConnection) -> None:
        """A connection whose answer was read whole, back for the next request: idle for
        IDLE_SECONDS at most, or less by the provider's Keep-Alive hint."""
        lifetime = connection.idle_lifetime(IDLE_SECONDS)
        if self._retired or lifetime <= 0:
            connection.abort()
            return
        connection.idle_until = self.loop.time() + lifetime
        self._idle.append(connection)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(SWEEP_SECONDS, self._sweep)
        if self._waiting:
            self._room()

    def _sweep(self) -> None:
        """Close the idle connections past their time; again in SWEEP_SECONDS while any is
        idle. The gauges are set here: a request's path writes no metric."""
        now = self.loop.time()
        expired = [c for c in self._idle if c.idle_until <= now]
        for connection in expired:
            self._idle.remove(connection)
            connection.abort()
        self._idle_gauge.set(len(self._idle))
        self._open_gauge.set(len(self._open))
        self._sweeper = self.loop.call_later(SWEEP_SECONDS, self._sweep) if self._idle else None

    def forget(self, connection: ProviderConnection) -> None:
        """The connection is gone (connection_lost)."""
        if connection in self._open:
            self._open.discard(connection)
            self._open_gauge.set(len(self._open))
        if connection in self._idle:
            self._idle.remove(connection)
        self._room()

    @property
    def open_count(self) -> int:
        return len(self._open)

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connection in list(self._open):
            connection.abort()
        self._idle.clear()
        await asyncio.sleep(0)  # their connection_lost callbacks run


def _discard(connection: ProviderConnection) -> None:
    connection.abort()
    connection.release()
