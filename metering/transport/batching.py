"""The request path's script calls, batched: the admissions and settlements that arrive in one turn
of the event loop go to Redis as one write on one connection, and their replies are read back in
order. Under load that spreads a round trip's fixed costs (a pool checkout, a syscall each way,
redis-py's per-command machinery) over many requests. Unloaded (the caller says it is alone, and
nothing is out), a call is written at once, in its caller's own step.

Every script sent this way is idempotent on its generation id, which is what makes the one retry
safe: a batch that meets a dead connection (Redis restarted since it was last used) is sent again,
whole, on a new one. A caller that stops waiting (its own time bound) leaves its reply to be read
and dropped, so a connection never goes back to the idle list with a reply still unread.

On a server with replicas (a cluster's master), a batch that carries a durable call (a
settlement) is followed on the same connection by `WAIT <replicas> <ms>`: the durable calls are
answered once a replica has confirmed the batch, or fail with NotReplicated (the script ran, but
a failover now could lose it: the caller journals it, to run it again, idempotently). The other
calls of the batch are answered at once, and the connection is reused once the WAIT answered.
A master whose replica did not confirm is not asked again for REPLICA_RETRY_SECONDS.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError, NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from metering.transport.batch_calls import (
    Call,
    Durable,
    NotSent,
    answer,
    confirmed,
    expire,
    fail,
    live,
    mark_sent,
    pack,
    pack_command,
)
from metering.transport.pipelined import PipelinedConnection

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection
    from redis.commands.core import AsyncScript

log = logging.getLogger("metering.batching")
MAX_BATCH = 128  # calls in one write
MAX_IDLE = 16  # connections kept between batches
MAX_IN_FLIGHT = 64  # batches (and so connections) out at once
REPLICA_RETRY_SECONDS = 10.0


class ScriptBatcher:
    def __init__(
        self,
        connect: "Callable[[], AbstractConnection]",
        *,
        timeout: float,
        alone: Callable[[], bool] | None = None,
        replicas: Callable[[], int] | None = None,
        replica_wait_ms: int = 100,
        merge: Callable[[list[Call]], list[Call]] | None = None,
    ) -> None:
        """`connect` makes a redis-py connection, not yet connected, to the one server this
        batcher writes to (for a Redis client: its pool's `make_connection`). `timeout` bounds
        one batch's round trip: past it, its connection is dropped. `alone` says whether the
        caller is the only one about (one request being served): its call is then written at
        once when nothing is out, not at the end of the loop turn. `replicas` says how many
        replicas the server has now, to WAIT for (at most one) after durable calls, up to
        `replica_wait_ms`. `merge`, when given, may join a batch's calls into fewer before it is
        sent (see metering/transport/settle_merge.py), answering each caller itself."""
        self._alone = alone
        self._merge = merge
        self._connect = connect
        self._replicas = replicas
        self._wait_ms = replica_wait_ms
        self._replicas_skipped_until = 0.0
        self._timeout = timeout
        self._queue: list[Call] = []
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
        durable: Durable = Durable.NO,
    ) -> "asyncio.Future[Any]":
        """The future of the script's reply, failed with RedisTimeoutError after `bound` seconds
        (a timer on the reply, cheaper than asyncio.timeout's cancellation of a waiting task).
        `sent`, when given, is resolved once the call has left this process for good (see
        PipelinedConnection.delivered); where that cannot be known it stays pending. `durable`:
        answered once a replica confirmed it, where the server has replicas (see above)."""
        if self._closed:
            raise NotSent("the gateway is closing its redis connections")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        call = Call(script, keys, args, future, sent, durable)
        if bound is not None:
            call.timer = loop.call_later(bound, expire, future, bound)
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
            batch = live(batch)  # some may have been queued past their bound
            if self._merge is not None and len(batch) > 1:  # a batch cut once, merged once
                batch = self._merge(batch)
            if not batch:
                continue
            connection = self._idle_connection()
            if connection is None:
                self._start(self._run(batch), batch)
            else:
                self._send(connection, batch)

    def _start(self, run: Coroutine[Any, Any, None], batch: list[Call]) -> None:
        task = asyncio.ensure_future(run)
        self._running.add(task)
        task.add_done_callback(lambda done: self._batch_done(done, batch))

    def _send(self, connection: PipelinedConnection, batch: list[Call]) -> None:
        replies = connection.send(pack(batch, []), len(batch))
        acks = self._ask_replicas(connection, batch)
        mark_sent(batch, connection, replies)
        timer = asyncio.get_running_loop().call_later(self._timeout, expire, replies, self._timeout)
        self._running.add(replies)
        replies.add_done_callback(
            lambda done: self._replies_came(done, connection, batch, timer, acks)
        )

    def _ask_replicas(
        self, connection: PipelinedConnection, batch: list[Call]
    ) -> "asyncio.Future[list[Any]] | None":
        """WAIT on the batch's connection when it carries a durable call and the server has a
        replica to ask (and the last one answered in time)."""
        wanted = max((c.durable for c in batch), default=Durable.NO)
        if self._replicas is None or not self._wait_ms or wanted is Durable.NO:
            return None
        skipping = time.monotonic() < self._replicas_skipped_until
        if (skipping and wanted is not Durable.MUST) or self._replicas() < 1:
            return None
        acks = connection.send(pack_command((b"WAIT", 1, self._wait_ms)), 1)
        acks.add_done_callback(self._acks_came)
        return acks

    def _acks_came(self, acks: "asyncio.Future[list[Any]]") -> None:
        if confirmed(acks):
            return
        if time.monotonic() >= self._replicas_skipped_until:
            log.warning(
                "no replica confirmed a settlement within %d ms: not asking again for %.0f s",
                self._wait_ms,
                REPLICA_RETRY_SECONDS,
            )
        self._replicas_skipped_until = time.monotonic() + REPLICA_RETRY_SECONDS

    def _keep_after(
        self, connection: PipelinedConnection, acks: "asyncio.Future[list[Any]] | None"
    ) -> None:
        """Back to the idle list, once its WAIT (if any) answered: no batch queues behind it."""
        if acks is None or acks.done():
            self._keep(connection)
        else:
            acks.add_done_callback(lambda _: self._keep(connection))

    def _replies_came(
        self,
        replies: "asyncio.Future[list[Any]]",
        connection: PipelinedConnection,
        batch: list[Call],
        timer: asyncio.TimerHandle,
        acks: "asyncio.Future[list[Any]] | None" = None,
    ) -> None:
        timer.cancel()
        self._running.discard(replies)
        exc = ConnectionError("batch cancelled") if replies.cancelled() else replies.exception()
        if exc is None:
            self._keep_after(connection, acks)
            pairs = list(zip(batch, replies.result(), strict=True))
            forgotten = [c for c, r in pairs if isinstance(r, NoScriptError)]
            answer([(c, r) for c, r in pairs if c not in forgotten], acks)
            if forgotten:  # a restarted Redis: load the scripts, then send these again
                reload = list({id(c.script): c.script for c in forgotten}.values())
                self._retry(forgotten, reload)
        elif isinstance(exc, ConnectionError) and not replies.cancelled():
            connection.close()
            self._retry(batch, [])  # once more, on a new connection
        else:
            connection.close()
            fail(batch, exc)
        self._flush_later()

    def _retry(self, batch: list[Call], reload: "list[AsyncScript]") -> None:
        if self._closed:
            fail(batch, ConnectionError("the gateway is closing its redis connections"))
        else:
            self._start(self._run(batch, reload, first_attempt=1), batch)

    def _batch_done(self, task: "asyncio.Future[None]", batch: list[Call]) -> None:
        self._running.discard(task)
        if task.cancelled():  # perhaps before its first step, when none of its handlers ran
            fail(batch, ConnectionError("the gateway is closing its redis connections"))
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
        self, batch: list[Call], reload: "list[AsyncScript] | None" = None, first_attempt: int = 0
    ) -> None:
        """Connect, send, read, answer; a dead connection gets one retry on a new one, and
        scripts a restarted Redis forgot are loaded in the retry's own write (SCRIPT LOAD
        first)."""
        reload = reload or []
        for attempt in range(first_attempt, 3):
            batch = live(batch)
            if not batch:
                return
            packed = pack(batch, reload)
            connection = await self._connection_for(batch, first=attempt == 0)
            if connection is None:
                return
            try:
                replies, acks = await self._round_trip(
                    connection, packed, len(reload) + len(batch), batch
                )
            except ConnectionError as exc:
                connection.close()
                if attempt == 0:
                    continue  # a dead connection: once more on a new one
                fail(batch, exc)
                return
            except RedisTimeoutError as exc:
                connection.close()
                fail(batch, exc)
                return
            except BaseException as exc:
                connection.close()
                closing = isinstance(exc, asyncio.CancelledError)
                fail(batch, ConnectionError("the gateway is closing") if closing else exc)
                raise
            self._keep_after(connection, acks)
            replies = replies[len(reload) :]
            forgotten = [
                c for c, r in zip(batch, replies, strict=True) if isinstance(r, NoScriptError)
            ]
            if forgotten and attempt < 2:
                reload = list({id(c.script): c.script for c in forgotten}.values())
                answered = [
                    (c, r) for c, r in zip(batch, replies, strict=True) if c not in forgotten
                ]
                answer(answered, acks)
                batch = forgotten  # they did not run: send them again, after their scripts
                continue
            answer(list(zip(batch, replies, strict=True)), acks)
            return

    async def _connection_for(
        self, batch: list[Call], *, first: bool
    ) -> PipelinedConnection | None:
        """A connection for the batch; None when there is none, the batch failed with why (not
        sent at all, when this is its first attempt)."""
        try:
            return await self._connection()
        except TimeoutError:
            fail(batch, RedisTimeoutError(f"redis did not answer within {self._timeout} s"))
        except RedisError as exc:  # refused, its own timeout, AUTH or SELECT refused
            never_sent = first and isinstance(exc, ConnectionError)
            fail(batch, NotSent(str(exc)) if never_sent else exc)
        except Exception as exc:
            failure = NotSent if first else ConnectionError
            fail(batch, failure(f"cannot connect to redis ({type(exc).__name__})"))
        except BaseException:
            fail(batch, ConnectionError("the gateway is closing its redis connections"))
            raise
        return None

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
        self, connection: PipelinedConnection, packed: bytes, count: int, batch: list[Call]
    ) -> "tuple[Any, asyncio.Future[list[Any]] | None]":
        """The replies (and the WAIT's future, if one was sent), or RedisTimeoutError after the
        batch bound (the connection is then out of step with its replies: the caller closes
        it)."""
        replies = connection.send(packed, count)
        acks = self._ask_replicas(connection, batch)
        mark_sent(batch, connection, replies)
        timer = asyncio.get_running_loop().call_later(self._timeout, expire, replies, self._timeout)
        try:
            return await replies, acks
        finally:
            timer.cancel()

    async def aclose(self) -> None:
        self._closed = True
        fail(self._queue, ConnectionError("the gateway is closing its redis connections"))
        self._queue = []
        for task in list(self._running):
            task.cancel()
        await asyncio.sleep(0)  # their callbacks close the connections they were using
        for connection in self._idle:
            connection.close()
        self._idle.clear()
