"""Settlements of one account that meet in one batch become one call of the settlement script.

Under load on a busy account several requests settle in the same turn of the loop: the batcher
already writes them to Redis together, and here the settlement calls among them that name the same
account (and want the same replica confirmation) are joined into one script call of up to
MAX_MERGED records (settle.lua takes any number). The account's counters, its usage by day and its
keys' counters are then written once for all of them, and the script's fixed cost is paid once.
Each caller still gets its own reply, in the shape of a one-record call; a failure is each
caller's failure, as it would have been for its own call (each then journals its own settlement,
idempotent on its generation id).
"""

import asyncio
import hashlib
from collections.abc import Sequence
from functools import partial
from typing import Any

from redis.exceptions import ConnectionError

from metering.scripts import settle_source
from metering.transport.batch_calls import Call, Durable

ACCOUNT_KEYS = 7  # settle.lua's keys before the records' own
ACCOUNT_ARGS = 4
RECORD_KEYS = 2
RECORD_ARGS = 8
MAX_MERGED = 32  # records in one call: bounds how long the script runs

SETTLE_SHA = hashlib.sha1(settle_source().encode()).hexdigest()


def merge_settlements(calls: list[Call]) -> list[Call]:
    """The batch with each account's settlements in one call, where the account has several;
    the order of the rest is kept."""
    groups: dict[tuple[str, Durable], list[Call]] = {}
    order: list[Call | list[Call]] = []
    for call in calls:
        one_record = len(call.keys) == ACCOUNT_KEYS + RECORD_KEYS  # never a joined call again
        if call.script.sha != SETTLE_SHA or call.future.done() or not one_record:
            order.append(call)
            continue
        group = groups.get((call.keys[0], call.durable))
        if group is None or len(group) == MAX_MERGED:
            group = groups[(call.keys[0], call.durable)] = []
            order.append(group)
        group.append(call)
    if len(order) == len(calls):
        return calls  # nothing to join
    return [one if isinstance(one, Call) else _joined(one) for one in order]


def _joined(calls: list[Call]) -> Call:
    if len(calls) == 1:
        return calls[0]
    loop = asyncio.get_running_loop()
    first = calls[0]
    keys = list(first.keys[:ACCOUNT_KEYS])
    args = list(first.args[:ACCOUNT_ARGS])
    for call in calls:
        keys += call.keys[ACCOUNT_KEYS : ACCOUNT_KEYS + RECORD_KEYS]
        args += call.args[ACCOUNT_ARGS : ACCOUNT_ARGS + RECORD_ARGS]
    sent: asyncio.Future[None] | None = None
    if any(call.sent is not None for call in calls):
        sent = loop.create_future()
        sent.add_done_callback(partial(_sent, calls))
    future: asyncio.Future[Any] = loop.create_future()
    future.add_done_callback(partial(_answer, calls))
    return Call(first.script, keys, args, future, sent, first.durable)


def split_reply(reply: Sequence[Any], count: int) -> list[list[Any]]:
    """settle.lua's reply for `count` records, as `count` one-record replies; a top-up request
    queued goes with the last record, the account's lease epoch with each."""
    epoch = reply[1 + 2 * count]
    return [
        [reply[0] if i == count - 1 else 0, reply[1 + 2 * i], reply[2 + 2 * i], epoch]
        for i in range(count)
    ]


def _answer(calls: list[Call], future: "asyncio.Future[Any]") -> None:
    exc = ConnectionError("batch cancelled") if future.cancelled() else future.exception()
    replies = [] if exc is not None else split_reply(future.result(), len(calls))
    for i, call in enumerate(calls):
        if call.timer is not None:
            call.timer.cancel()
        if call.future.done():
            continue  # its caller stopped waiting
        if exc is not None:
            call.future.set_exception(exc)
        else:
            call.future.set_result(replies[i])


def _sent(calls: list[Call], sent: "asyncio.Future[None]") -> None:
    for call in calls:
        if call.sent is not None and not call.sent.done():
            call.sent.set_result(None)
