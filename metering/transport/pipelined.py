"""One Redis connection for pipelined batches: a write of many commands, their replies parsed by
hiredis as they arrive and handed back in order.

redis-py opens the connection and runs its handshake (TCP or unix socket, TLS, AUTH, SELECT,
whatever the URL asks for); then this protocol takes the transport over. On the request path
that replaces, per reply, a coroutine, a timeout context and a parser round of redis-py's with
one `gets()` in C: about a tenth of the gateway's time under load went to reading replies.
"""

import asyncio
import contextlib
import fcntl
import socket
import sys
from collections import deque
from typing import TYPE_CHECKING, Any

import hiredis
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    ConnectionError,
    InvalidResponse,
    MovedError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection


class _Pending:
    __slots__ = ("count", "future", "replies")

    def __init__(self, count: int, future: "asyncio.Future[list[Any]]") -> None:
        self.count, self.future = count, future
        self.replies: list[Any] = []


def _typed(error: ResponseError) -> RedisError:
    """The classes redis-py gives the error replies that callers tell apart."""
    text = str(error)
    for prefix, kind in _ERROR_CLASSES:
        if text.startswith(prefix):
            return kind(text[len(prefix) :].lstrip() or text)
    return error


_ERROR_CLASSES: tuple[tuple[str, type[RedisError]], ...] = (
    ("NOSCRIPT", NoScriptError),
    ("LOADING", BusyLoadingError),
    ("READONLY", ReadOnlyError),
    ("OOM", OutOfMemoryError),
    ("MOVED ", MovedError),  # a cluster's redirections, parsed as redis-py's cluster client does
    ("ASK ", AskError),
    ("CLUSTERDOWN", ClusterDownError),
    ("TRYAGAIN", TryAgainError),
)


_SIOCOUTQNSD = 0x894B  # Linux: bytes in a TCP socket's send queue not yet sent


def _socket_of(transport: asyncio.BaseTransport) -> tuple[str, int | None]:
    if transport.get_extra_info("sslcontext") is not None or not sys.platform.startswith("linux"):
        return "other", None
    sock = transport.get_extra_info("socket")
    if sock is None:
        return "other", None
    if sock.family == socket.AF_UNIX:
        return "unix", sock.fileno()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        return "tcp", sock.fileno()
    return "other", None


class PipelinedConnection(asyncio.Protocol):
    """Send with `send(packed, count)`; its future gets the `count` replies, an error reply as a
    RedisError in its place (NOSCRIPT, LOADING, READONLY, OOM and a cluster's MOVED, ASK,
    CLUSTERDOWN and TRYAGAIN as redis-py's classes)."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader(
            encoding="utf-8", protocolError=InvalidResponse, replyError=ResponseError
        )
        self._pending: deque[_Pending] = deque()
        self._transport: asyncio.Transport | None = None
        self.answered = False  # a whole batch of replies came back on it
        self._writer: asyncio.StreamWriter | None = None  # held: its __del__ closes the transport
        self._socket_kind = "other"  # unix | tcp | other (TLS, or unknown)
        self._fileno: int | None = None
        self.closed = False

    @classmethod
    async def open(cls, handshake: "AbstractConnection") -> "PipelinedConnection":
        """Connect `handshake` (a redis-py connection made by the pool) and take it over."""
        try:
            await handshake.connect()  # type: ignore[no-untyped-call]
        except BaseException:  # refused, timed out, cancelled: leave no socket behind
            with contextlib.suppress(Exception):
                await handshake.disconnect(nowait=True)
            raise
        writer: asyncio.StreamWriter | None = getattr(handshake, "_writer", None)
        if writer is None:
            await handshake.disconnect()
            raise ConnectionError("redis-py connection has no stream writer to take over")
        pipe = cls()
        pipe._writer = writer
        transport = writer.transport
        pipe._socket_kind, pipe._fileno = _socket_of(transport)
        transport.set_protocol(pipe)
        # The transport is the pipe's now: redis-py's handle must not close it as "unclosed".
        handshake._writer = handshake._reader = None
        pipe._transport = transport  # type: ignore[assignment]
        if transport.is_closing():
            pipe.closed = True
        return pipe

    def send(self, packed: bytes, count: int) -> "asyncio.Future[list[Any]]":
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        if self.closed or self._transport is None:
            future.set_exception(ConnectionError("redis connection is closed"))
            return future
        self._pending.append(_Pending(count, future))
        self._transport.write(packed)
        return future

    @property
    def delivered(self) -> bool:
        """What was sent has left this process for good, on a connection Redis has answered on
        before: it reaches Redis even if this process dies now.

        On a unix socket, bytes the kernel accepted are in Redis's own queue. On TCP they may still
        wait in this socket's send queue (Redis's window full), and a process that dies with
        replies unread resets the connection, dropping what was not sent: so nothing may be left
        unsent (SIOCOUTQNSD, Linux). Through TLS, or where that cannot be asked, never: the
        caller then waits for the reply."""
        if not self.answered or self.closed or self._transport is None:
            return False
        if self._transport.get_write_buffer_size() != 0:
            return False
        if self._socket_kind == "unix":
            return True
        if self._socket_kind == "tcp" and self._fileno is not None:
            try:
                unsent = fcntl.ioctl(self._fileno, _SIOCOUTQNSD, b"\0\0\0\0")
            except OSError:
                return False
            return int.from_bytes(unsent, sys.byteorder) == 0
        return False

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        pending = self._pending
        try:
            while pending:
                reply = reader.gets()
                if reply is False:
                    return
                head = pending[0]
                if isinstance(reply, ResponseError):
                    reply = _typed(reply)
                head.replies.append(reply)
                if len(head.replies) == head.count:
                    pending.popleft()
                    self.answered = True
                    if not head.future.done():
                        head.future.set_result(head.replies)
        except Exception as exc:  # a protocol error, a reply that is not UTF-8
            self._fail(ConnectionError(f"redis sent an unreadable reply ({type(exc).__name__})"))
            self.close()
            return
        if reader.gets() is not False:  # a reply nobody asked for: the stream is out of step
            self._fail(ConnectionError("redis sent a reply that was not asked for"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError(f"redis closed the connection ({exc or 'end of stream'})"))

    def _fail(self, exc: Exception) -> None:
        while self._pending:
            head = self._pending.popleft()
            if not head.future.done():
                head.future.set_exception(exc)

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    def close(self) -> None:
        """Drop the connection; what is still pending fails with ConnectionError."""
        self.closed = True
        if self._transport is not None:
            self._transport.close()
        self._fail(ConnectionError("redis connection was closed by the gateway"))
