"""The request path's script calls, batched: the admissions and settlements that arrive in one turn
of the event loop go to Redis as one write on one connection, and their replies are read back in
order. Under load that spreads a round trip's fixed costs (a pool checkout, a syscall each way,
redis-py's per-command machinery) over many requests. Unloaded (the caller says it is alone, and
nothing is out), a call is written at once, in its caller's own step.

Every script sent this way is idempotent on its generation id, which is what makes the one retry
safe: a batch that meets a dead connection (Redis restarted since it was last used) is sent again,
whole, on a new one. A caller that stops waiting (its own time bound) leaves its reply to be read
and dropped, so a connection never goes back to the idle list with a reply still unread.
"""

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, cast

import hiredis
from redis.exceptions import ConnectionError, NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from metering.pipelined import PipelinedConnection

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection
    from redis.commands.core import AsyncScript

# hiredis packs a command in C; its stub types the tuple as one element long.
pack_command = cast(Callable[[tuple[Any, ...]], bytes], hiredis.pack_command)

MAX_BATCH = 128  # calls in one write
MAX_IDLE = 16  # connections kept between batches
MAX_IN_FLIGHT = 64  # batches (and so connections) out at once


class NotSent(ConnectionError):
    """The call never left this process (no connection could be had): its script did not run.
    Any other failure may come after Redis ran it."""


class _Call:
    __slots__ = ("args", "future", "keys", "script", "sent", "timer")

    def __init__(
        self,
        script: "AsyncScript",
        keys: Sequence[str],
        args: Sequence[Any],
        future: "asyncio.Future[Any]",
        sent: "asyncio.Future[None] | None",
    ) -> None:
        self.script, self.keys, self.args, self.future = script, keys, args, future
        self.sent = sent
        self.timer: asyncio.TimerHandle | None = None  # the caller's own bound


class ScriptBatcher:
    def __init__(
        self,
        connect: "Callable[[], AbstractConnection]",
        *,
        timeout: float,
        alone: Callable[[], bool] | None = None,
    ) -> None:
        """`connect` makes a redis-py connection, not yet connected, to the one server this
        batcher writes to (for a Redis client: its pool's `make_connection`). `timeout` bounds
        one batch's round trip: past it, its connection is dropped. `alone` says whether the
        caller is the only one about (one request being served): its call is then written at
        once when nothing is out, not at the end of the loop turn."""
        self._alone = alone
        self._connect = connect
        self._timeout = timeout
        self._queue: list[_Call] = []
        self._flush_scheduled = False
        self._idle: list[PipelinedConnection] = []
        self._running: set[asyncio.Future[Any]] = set()  # batch tasks, and replies awaited
        self._closed = False

    def submit(
        self,
        script: "AsyncScript",
        keys: Sequence[str],
        args: Sequence[Any],
        bound: float | None = None,
        sent: "asyncio.Future[None] | None" = None,
    ) -> "asyncio.Future[Any]":
        """The future of the script's reply, failed with RedisTimeoutError after `bound` seconds
        (a timer on the reply, cheaper than asyncio.timeout's cancellation of a waiting task).
        `sent`, when given, is resolved once the call has left this process for good (see
        PipelinedConnection.delivered); where that cannot be known it stays pending."""
        if self._closed:
            raise NotSent("the gateway is closing its redis connections")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        call = _Call(script, keys, args, future, sent)
        if bound is not None:
            call.timer = loop.call_later(bound, _expire, future, bound)
        if self._alone is not None and not self._queue and not self._running and self._alone():
            connection = self._idle_connection()
            if connection is not None:  # no batch for it to join: saves a turn of the loop
                self._send(connection, [call])
                return future
        self._queue.append(call)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        """Send what is queued, unless MAX_IN_FLIGHT batches are still out (a Redis that hangs):
        then the queue waits for one of them to end (its callers' own bounds still run).

        On an idle connection a batch is written here and now, and its replies are taken by a
        callback: no task, no extra turn of the loop. Without one (or to retry), a task
        connects first."""
        self._flush_scheduled = False
        if self._closed:
            return
        while self._queue and len(self._running) < MAX_IN_FLIGHT:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            batch = _live(batch)  # some may have been queued past their bound
            if not batch:
                continue
            connection = self._idle_connection()
            if connection is None:
                self._start(self._run(batch), batch)
            else:
                self._send(connection, batch)

    def _start(self, run: Coroutine[Any, Any, None], batch: list[_Call]) -> None:
        task = asyncio.ensure_future(run)
        self._running.add(task)
        task.add_done_callback(lambda done: self._batch_done(done, batch))

    def _send(self, connection: PipelinedConnection, batch: list[_Call]) -> None:
        replies = connection.send(_pack(batch, []), len(batch))
        _mark_sent(batch, connection, replies)
        timer = asyncio.get_running_loop().call_later(
            self._timeout, _expire, replies, self._timeout
        )
        self._running.add(replies)
        replies.add_done_callback(lambda done: self._replies_came(done, connection, batch, timer))

    def _replies_came(
        self,
        replies: "asyncio.Future[list[Any]]",
        connection: PipelinedConnection,
        batch: list[_Call],
        timer: asyncio.TimerHandle,
    ) -> None:
        timer.cancel()
        self._running.discard(replies)
        exc = ConnectionError("batch cancelled") if replies.cancelled() else replies.exception()
        if exc is None:
            self._keep(connection)
            pairs = list(zip(batch, replies.result(), strict=True))
            forgotten = [c for c, r in pairs if isinstance(r, NoScriptError)]
            _answer([(c, r) for c, r in pairs if c not in forgotten])
            if forgotten:  # a restarted Redis: load the scripts, then send these again
                reload = list({id(c.script): c.script for c in forgotten}.values())
                self._retry(forgotten, reload)
        elif isinstance(exc, ConnectionError) and not replies.cancelled():
            connection.close()
            self._retry(batch, [])  # once more, on a new connection
        else:
            connection.close()
            _fail(batch, exc)
        self._flush_later()

    def _retry(self, batch: list[_Call], reload: "list[AsyncScript]") -> None:
        if self._closed:
            _fail(batch, ConnectionError("the gateway is closing its redis connections"))
        else:
            self._start(self._run(batch, reload, first_attempt=1), batch)

    def _batch_done(self, task: "asyncio.Future[None]", batch: list[_Call]) -> None:
        self._running.discard(task)
        if task.cancelled():  # perhaps before its first step, when none of its handlers ran
            _fail(batch, ConnectionError("the gateway is closing its redis connections"))
        self._flush_later()

    def _flush_later(self) -> None:
        if self._queue and not self._flush_scheduled and not self._closed:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _keep(self, connection: PipelinedConnection) -> None:
        if len(self._idle) < MAX_IDLE and not connection.closed:
            self._idle.append(connection)
        else:
            connection.close()

    async def _run(
        self, batch: list[_Call], reload: "list[AsyncScript] | None" = None, first_attempt: int = 0
    ) -> None:
        """Connect, send, read, answer; a dead connection gets one retry on a new one, and
        scripts a restarted Redis forgot are loaded in the retry's own write (SCRIPT LOAD
        first)."""
        reload = reload or []
        for attempt in range(first_attempt, 3):
            batch = _live(batch)
            if not batch:
                return
            packed = _pack(batch, reload)
            try:
                connection = await self._connection()
            except TimeoutError:
                _fail(batch, RedisTimeoutError(f"redis did not answer within {self._timeout} s"))
                return
            except RedisError as exc:  # refused, its own timeout, AUTH or SELECT refused
                never_sent = attempt == 0 and isinstance(exc, ConnectionError)
                _fail(batch, NotSent(str(exc)) if never_sent else exc)
                return
            except Exception as exc:
                failure = NotSent if attempt == 0 else ConnectionError
                _fail(batch, failure(f"cannot connect to redis ({type(exc).__name__})"))
                return
            except BaseException:
                _fail(batch, ConnectionError("the gateway is closing its redis connections"))
                raise
            try:
                replies = await self._round_trip(
                    connection, packed, len(reload) + len(batch), batch
                )
            except ConnectionError as exc:
                connection.close()
                if attempt == 0:
                    continue  # a dead connection: once more on a new one
                _fail(batch, exc)
                return
            except RedisTimeoutError as exc:
                connection.close()
                _fail(batch, exc)
                return
            except BaseException as exc:
                connection.close()
                closing = isinstance(exc, asyncio.CancelledError)
                _fail(batch, ConnectionError("the gateway is closing") if closing else exc)
                raise
            self._keep(connection)
            replies = replies[len(reload) :]
            forgotten = [
                c for c, r in zip(batch, replies, strict=True) if isinstance(r, NoScriptError)
            ]
            if forgotten and attempt < 2:
                reload = list({id(c.script): c.script for c in forgotten}.values())
                _answer([(c, r) for c, r in zip(batch, replies, strict=True) if c not in forgotten])
                batch = forgotten  # they did not run: send them again, after their scripts
                continue
            _answer(list(zip(batch, replies, strict=True)))
            return

    def _idle_connection(self) -> PipelinedConnection | None:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
        return None

    async def _connection(self) -> PipelinedConnection:
        """An idle connection still open, else a new one (connected within the batch bound)."""
        idle = self._idle_connection()
        if idle is not None:
            return idle
        handshake = self._connect()
        return await asyncio.wait_for(PipelinedConnection.open(handshake), self._timeout)

    async def _round_trip(
        self, connection: PipelinedConnection, packed: bytes, count: int, batch: list[_Call]
    ) -> Any:
        """The replies, or RedisTimeoutError after the batch bound (the connection is then out
        of step with its replies: the caller closes it)."""
        replies = connection.send(packed, count)
        _mark_sent(batch, connection, replies)
        timer = asyncio.get_running_loop().call_later(
            self._timeout, _expire, replies, self._timeout
        )
        try:
            return await replies
        finally:
            timer.cancel()

    async def aclose(self) -> None:
        self._closed = True
        _fail(self._queue, ConnectionError("the gateway is closing its redis connections"))
        self._queue = []
        for task in list(self._running):
            task.cancel()
        await asyncio.sleep(0)  # their callbacks close the connections they were using
        for connection in self._idle:
            connection.close()
        self._idle.clear()


def _pack(batch: list[_Call], reload: "list[AsyncScript]") -> bytes:
    return b"".join(
        [pack_command((b"SCRIPT", b"LOAD", s.script)) for s in reload]
        + [pack_command((b"EVALSHA", c.script.sha, len(c.keys), *c.keys, *c.args)) for c in batch]
    )


def _live(batch: list[_Call]) -> list[_Call]:
    """The calls whose callers still wait; the others' timers are stopped."""
    live = []
    for call in batch:
        if not call.future.done():
            live.append(call)
        elif call.timer is not None:
            call.timer.cancel()
    return live


def _mark_sent(
    batch: list[_Call], connection: PipelinedConnection, replies: "asyncio.Future[Any]"
) -> None:
    """Tell the callers that asked (`sent`) their call will reach Redis whatever happens to
    this process now; on a fresh connection, or one whose write is still buffered, they wait
    for the reply instead."""
    waiting = [call.sent for call in batch if call.sent is not None and not call.sent.done()]
    if not waiting or replies.done() or not connection.delivered:  # delivered costs a syscall
        return
    for sent in waiting:
        sent.set_result(None)


def _answer(pairs: list[tuple[_Call, Any]]) -> None:
    for call, reply in pairs:
        if call.timer is not None:
            call.timer.cancel()
        if call.future.done():
            continue  # its caller stopped waiting
        if isinstance(reply, RedisError):  # an error reply, in its place
            call.future.set_exception(reply)
        else:
            call.future.set_result(reply)


def _expire(future: "asyncio.Future[Any]", bound: float) -> None:
    if not future.done():
        future.set_exception(RedisTimeoutError(f"redis did not answer within {bound} s"))


def _fail(batch: list[_Call], exc: BaseException) -> None:
    for call in batch:
        if call.timer is not None:
            call.timer.cancel()
        if not call.future.done():
            call.future.set_exception(exc)
