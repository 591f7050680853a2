"""One keep-alive connection to a provider (the pool that holds them: provider_client.py): a
request written in one call, the answer framed by gateway/proxy/forward/http1.py as it arrives.

Why not aiohttp's ClientSession: its general machinery (request and response objects, cookie
jar, auto headers, a task to write each body, timer contexts) was about a fifth of the gateway's
CPU per request under `make bench` (README, Performance), more than admission or settlement.
A provider hop needs one thing: POST a JSON body to a fixed origin and relay the answer.
Everything unusual a provider might send (1xx heads, chunked or compressed bodies, a body that
ends with the connection, a connection closed while idle) is handled; what cannot be framed
safely is a protocol failure, and that connection is closed.
"""

import asyncio
import socket
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from gateway.proxy.forward.http1 import (
    MAX_HEAD_BYTES,
    Body,
    Decoder,
    Headers,
    ProtocolViolation,
    ResponseHead,
    UntilClose,
    bare_line_feed,
    body_of,
    decoder_for,
    parse_head,
)

if TYPE_CHECKING:
    from gateway.proxy.forward.provider_client import ProviderPool

HIGH_WATER = 256 * 1024  # unread answer bytes that pause reading from the provider


class UpstreamBroken(Exception):
    """The provider's connection failed or its bytes made no sense; `kind` says which
    (connect | timeout | protocol)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class UpstreamSilent(UpstreamBroken, TimeoutError):
    """The provider sent nothing for `upstream_read_timeout` seconds."""

    def __init__(self, message: str) -> None:
        super().__init__("timeout", message)


class ProviderConnection(asyncio.Protocol):
    """One connection, one request at a time. The answer's state lives here; a
    ProviderResponse is the caller's handle on it."""

    def __init__(self, pool: "ProviderPool") -> None:
        self._pool = pool
        self._loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._head = b""  # the answer's head as it arrives
        self._head_ready: asyncio.Future[ResponseHead] | None = None
        self._keep_alive = False
        self._body: Body | None = None
        self._decoder: Decoder | None = None
        self._pieces: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._failure: BaseException | None = None
        self._waiter: asyncio.Future[bool] | None = None
        # One timer a connection, not one a wait: a stream waits once an event, and the timer
        # is moved on only when it fires before the wait under way is due (see _wait).
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._wake_at = 0.0  # when the wait under way gives up
        self._wake_silent = False  # and whether that is the read timeout (else its own `until`)
        self._busy = False  # a request is out and its answer not released
        self.received = 0  # bytes of the current request's answer that came (0: none yet)
        self._keep_alive_hint: float | None = None  # the provider's Keep-Alive: timeout=
        self.idle_until = 0.0  # loop time after which it is not reused, while idle

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if not self._busy:
            self.abort()  # bytes on an idle connection: its framing can no longer be trusted
            return
        self.received += len(data)
        if self._failure is not None:
            return
        if self._body is not None and self._body.done:
            self._keep_alive = False  # bytes after a complete answer: this one stands, no reuse
            return
        try:
            if self._body is None:
                data = self._take_head(data)
                if self._body is None:
                    return
            self._take_body(data)
        except ProtocolViolation as exc:
            self._fail(UpstreamBroken("protocol", str(exc)))

    def eof_received(self) -> bool:
        self.closed = True  # an idle one is not checked out again, even before connection_lost
        if self._busy and self._failure is None:
            try:
                if self._body is None:
                    raise ProtocolViolation("the connection closed before the answer's head")
                self._body.eof()
                self._wake()
            except ProtocolViolation as exc:
                self._fail(UpstreamBroken("protocol", str(exc)))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        by_us = self.closed  # abort() and eof_received() mark it first
        self.closed = True
        self._stop_timer()
        self._pool.forget(self)
        if self._busy and self._failure is None and not (self._body and self._body.done):
            if exc is None and not by_us and self._ragged_tls_end():
                return
            self._fail(UpstreamBroken("protocol", "the provider closed the connection"))

    def _ragged_tls_end(self) -> bool:
        """A TLS answer framed by the connection's end, which ended without close_notify: asyncio
        reports it as an end of file, uvloop only as the connection lost. Taken as the end on
        both loops, as Python's ssl module (suppress_ragged_eofs) and aiohttp do: a cut-off JSON
        answer still fails to parse (502), and a cut-off stream lacks its usage (estimated)."""
        body = self._body
        if not self._pool.secure or body is None or not isinstance(body, UntilClose):
            return False
        body.eof()
        self._wake()
        return True

    # the request

    async def request(self, head: bytes, body: bytes) -> "ProviderResponse":
        assert self.transport is not None and not self._busy
        self._busy = True
        self.received = 0
        self._head = b""
        self._body = self._decoder = self._failure = None
        self._pieces.clear()
        self._buffered = 0
        ready: asyncio.Future[ResponseHead] = self._loop.create_future()
        self._head_ready = ready
        # Written whole: a body the provider reads slowly waits in the transport's buffer (it is
        # at most the request size cap).
        self.transport.writelines((head, body))
        timer = self._loop.call_later(self._pool.read_timeout, self._silent, ready)
        try:
            answer = await ready
        finally:
            timer.cancel()
            self._head_ready = None
        return ProviderResponse(self, answer.status, answer.headers)

    def _take_head(self, data: bytes) -> bytes:
        """Consume head bytes; returns what follows the head (the body's first bytes)."""
        while True:
            buffered = self._head + data if self._head else data
            end = buffered.find(b"\r\n\r\n")
            if end > MAX_HEAD_BYTES or (end < 0 and len(buffered) > MAX_HEAD_BYTES):
                raise ProtocolViolation("the answer's head is too large")
            if bare_line_feed(buffered if end < 0 else buffered[:end]):
                raise ProtocolViolation("the answer's head ends a line without CR")
            if end < 0:
                self._head = buffered
                return b""
            head = parse_head(buffered[:end])
            self._head, data = b"", buffered[end + 4 :]
            if head.status < 200:  # 100 Continue, 103 Early Hints: the real head follows
                if head.status == 101:
                    raise ProtocolViolation("the provider switched protocols")
                continue
            self._keep_alive = head.keep_alive
            self._keep_alive_hint = keep_alive_timeout(head.headers.get("keep-alive"))
            self._decoder = decoder_for(head)
            self._body = body_of(head)
            if self._head_ready is not None and not self._head_ready.done():
                self._head_ready.set_result(head)
            return data

    def _take_body(self, data: bytes) -> None:
        assert self._body is not None
        if data:
            payload, rest = self._body.feed(data)
            if rest:
                self._keep_alive = False  # bytes after the answer's end: no reuse
            if payload:
                self._pieces.append(payload)
                self._buffered += len(payload)
                if self._buffered > HIGH_WATER and not self._paused and self.transport:
                    self._paused = True
                    self.transport.pause_reading()
        if self._pieces or self._body.done:
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(True)

    def _silent(self, waiting: "asyncio.Future[Any]") -> None:
        if not waiting.done():
            self._fail(
                UpstreamSilent(f"the provider sent nothing within {self._pool.read_timeout:g} s")
            )

    def _fail(self, failure: UpstreamBroken) -> None:
        if self._failure is None:
            self._failure = failure
        for waiting in (self._head_ready, self._waiter):
            if waiting is not None and not waiting.done():
                waiting.set_exception(failure)
        self.abort()

    def abort(self) -> None:
        self._stop_timer()
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # idling in the pool

    def idle_lifetime(self, default: float) -> float:
        """How long it may wait idle for the next request: `default`, or a second less than the
        provider said it keeps it (`Keep-Alive: timeout=N`), whichever is shorter."""
        hint = self._keep_alive_hint
        return default if hint is None else min(default, hint - 1)

    # the answer, through ProviderResponse

    async def readany(self, until: float | None = None) -> bytes | None:
        """The body's next bytes (b"" at its end); None when `until` (loop time) came first:
        the one timer of a wait stands for both that and the read timeout."""
        while True:
            if self._decoder is not None and self._decoder.tail:
                out = self._decode(b"")
                if out:
                    return out
            if self._pieces:
                raw = self._pieces[0] if len(self._pieces) == 1 else b"".join(self._pieces)
                self._pieces.clear()
                self._buffered = 0
                if self._paused and not self.closed and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                out = raw if self._decoder is None else self._decode(raw)
                if out:
                    return out
                continue
            if self._failure is not None:
                raise self._failure
            if self._body is None or self._body.done:
                if self._decoder is not None:
                    self._finish_decoding()
                return b""
            if not await self._wait(until):
                return None

    def _decode(self, raw: bytes) -> bytes:
        assert self._decoder is not None
        try:
            return self._decoder.decode(raw)
        except ProtocolViolation as exc:
            failure = UpstreamBroken("protocol", str(exc))
            self._fail(failure)
            raise failure from None

    def _finish_decoding(self) -> None:
        assert self._decoder is not None
        try:
            self._decoder.finish()
        except ProtocolViolation as exc:
            failure = UpstreamBroken("protocol", str(exc))
            self._fail(failure)
            raise failure from None

    async def _wait(self, until: float | None = None) -> bool:
        """True once something came (or the end, or a failure); False at `until`."""
        waiter: asyncio.Future[bool] = self._loop.create_future()
        self._waiter = waiter
        silent_at = self._loop.time() + self._pool.read_timeout
        if until is not None and until < silent_at:
            self._wake_at, self._wake_silent = until, False
        else:
            self._wake_at, self._wake_silent = silent_at, True
        if self._timer is None or self._timer_at > self._wake_at:
            self._stop_timer()
            self._timer = self._loop.call_at(self._wake_at, self._due)
            self._timer_at = self._wake_at
        try:
            return await waiter
        finally:
            self._waiter = None

    def _due(self) -> None:
        """The timer: the wait under way gives up, if it is due; else the timer moves on to it."""
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # no wait now: the next one sets the timer again
        if self._wake_at > self._timer_at:  # the wait under way is due later than this timer
            self._timer = self._loop.call_at(self._wake_at, self._due)
            self._timer_at = self._wake_at
        elif self._wake_silent:
            self._silent(waiter)
        else:
            waiter.set_result(False)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def release(self) -> None:
        """Back to the pool when the whole answer was read and the framing allows another
        request; else closed."""
        self._stop_timer()
        if not self._busy:
            return
        self._busy = False
        body = self._body
        reusable = (
            self._keep_alive
            and self._failure is None
            and not self._pieces
            and body is not None
            and body.done
            and body.reusable
            and (self._decoder is None or not self._decoder.tail)
            and not self.closed
        )
        if reusable:
            self._pool.keep(self)
        else:
            self.abort()


def keep_alive_timeout(value: str | None) -> float | None:
    """`timeout=N` of a Keep-Alive header (RFC 9112 leaves it to HTTP/1.0's draft), or None."""
    if not value:
        return None
    for part in value.split(","):
        name, _, number = part.strip().partition("=")
        if name.strip().lower() == "timeout":
            number = number.strip()
            return float(number) if number.isascii() and number.isdigit() else None
    return None


class ProviderResponse:
    """The caller's handle on one answer: its status and headers, `readany()` for the body
    as it arrives (b"" at its end), then `release()` (or `close()` to stop it at once)."""

    __slots__ = ("_connection", "headers", "status")

    def __init__(self, connection: ProviderConnection, status: int, headers: Headers) -> None:
        self._connection = connection
        self.status = status
        self.headers = headers

    async def readany(self) -> bytes:
        piece = await self._connection.readany()
        assert piece is not None  # without a time to give up at, it waits for bytes
        return piece

    async def read_until(self, until: float) -> bytes | None:
        """The next bytes, or None when nothing came before `until` (loop time)."""
        return await self._connection.readany(until)

    def release(self) -> None:
        self._connection.release()

    def close(self) -> None:
        self._connection.abort()
        self._connection.release()
