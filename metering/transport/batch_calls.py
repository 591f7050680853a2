"""One script call of the request path's batches, and how its reply reaches its caller.

A call is answered with its reply, or its error reply as the RedisError in its place; a durable
call in a batch followed by WAIT is answered once the WAIT said a replica has it (else it fails
with NotReplicated). See metering/batching.py for the batcher that sends them.
"""

import asyncio
from collections.abc import Callable, Sequence
from enum import IntEnum
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import hiredis
from redis.exceptions import ConnectionError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from metering.transport.pipelined import PipelinedConnection

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

# hiredis packs a command in C; its stub types the tuple as one element long.
pack_command = cast(Callable[[tuple[Any, ...]], bytes], hiredis.pack_command)


class Durable(IntEnum):
    """How a call wants a replica's confirmation: not at all; unless the master's replica lately
    failed to confirm in time (a new settlement); or always, while the master has a replica
    online (a journaled settlement run again: it is there because no replica confirmed it)."""

    NO = 0
    TRY = 1
    MUST = 2


class NotReplicated(RedisError):
    """The script ran on the master, but no replica confirmed it in time."""


class NotSent(ConnectionError):
    """The call never left this process (no connection could be had): its script did not run.
    Any other failure may come after Redis ran it."""


class Call:
    __slots__ = ("args", "durable", "future", "keys", "script", "sent", "timer")

    def __init__(
        self,
        script: "AsyncScript",
        keys: Sequence[str],
        args: Sequence[Any],
        future: "asyncio.Future[Any]",
        sent: "asyncio.Future[None] | None",
        durable: Durable = Durable.NO,
    ) -> None:
        self.script, self.keys, self.args, self.future = script, keys, args, future
        self.sent = sent
        self.durable = durable  # answered once a replica has it (where there are replicas)
        self.timer: asyncio.TimerHandle | None = None  # the caller's own bound


def pack(batch: list[Call], reload: "list[AsyncScript]") -> bytes:
    return b"".join(
        [pack_command((b"SCRIPT", b"LOAD", s.script)) for s in reload]
        + [pack_command((b"EVALSHA", c.script.sha, len(c.keys), *c.keys, *c.args)) for c in batch]
    )


def live(batch: list[Call]) -> list[Call]:
    """The calls whose callers still wait; the others' timers are stopped."""
    live = []
    for call in batch:
        if not call.future.done():
            live.append(call)
        elif call.timer is not None:
            call.timer.cancel()
    return live


def mark_sent(
    batch: list[Call], connection: PipelinedConnection, replies: "asyncio.Future[Any]"
) -> None:
    """Tell the callers that asked (`sent`) their call will reach Redis whatever happens to
    this process now; on a fresh connection, or one whose write is still buffered, they wait
    for the reply instead."""
    waiting = [call.sent for call in batch if call.sent is not None and not call.sent.done()]
    if not waiting or replies.done() or not connection.delivered:  # delivered costs a syscall
        return
    for sent in waiting:
        sent.set_result(None)


def answer(pairs: list[tuple[Call, Any]], acks: "asyncio.Future[list[Any]] | None" = None) -> None:
    """Each call its reply; a durable one (with a WAIT out) once the WAIT answered."""
    for call, reply in pairs:
        if call.future.done():
            if call.timer is not None:
                call.timer.cancel()
            continue  # its caller stopped waiting
        if acks is not None and call.durable and not isinstance(reply, RedisError):
            acks.add_done_callback(partial(confirm, call, reply))
            continue
        if call.timer is not None:
            call.timer.cancel()
        if isinstance(reply, RedisError):  # an error reply, in its place
            call.future.set_exception(reply)
        else:
            call.future.set_result(reply)


def confirmed(acks: "asyncio.Future[list[Any]]") -> bool:
    if acks.cancelled() or acks.exception() is not None:
        return False
    reply = acks.result()[0]
    return not isinstance(reply, RedisError) and int(reply) >= 1


def confirm(call: Call, reply: Any, acks: "asyncio.Future[list[Any]]") -> None:
    if call.timer is not None:
        call.timer.cancel()
    if call.future.done():
        return
    if confirmed(acks):
        call.future.set_result(reply)
    else:
        call.future.set_exception(NotReplicated("no replica confirmed it in time"))


def expire(future: "asyncio.Future[Any]", bound: float) -> None:
    if not future.done():
        future.set_exception(RedisTimeoutError(f"redis did not answer within {bound} s"))


def fail(batch: list[Call], exc: BaseException) -> None:
    for call in batch:
        if call.timer is not None:
            call.timer.cancel()
        if not call.future.done():
            call.future.set_exception(exc)
