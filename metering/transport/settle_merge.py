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
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError

from metering.scripts import settle_source
from metering.transport.batch_calls import Call, Durable

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

ACCOUNT_KEYS = 7  # settle.lua's keys before the records' own
ACCOUNT_ARGS = 4
RECORD_KEYS = 2  # and one per thing it holds
RECORD_ARGS = 9  # and two per thing it holds
MAX_MERGED = 32  # records in one call: bounds how long the script runs

SETTLE_BODY = settle_source()
_SETTLE_SHAS: dict[str, bool] = {}  # a script's sha: is it the settlement script (any prelude)?


def _is_settlement(script: "AsyncScript") -> bool:
    known = _SETTLE_SHAS.get(script.sha)
    if known is None:
        known = _SETTLE_SHAS[script.sha] = str(script.script).endswith(SETTLE_BODY)
    return known


def _one_record(call: Call) -> bool:
    """A settlement call of one record (a joined call is never joined again)."""
    if len(call.args) < ACCOUNT_ARGS + RECORD_ARGS:
        return False
    held = int(call.args[ACCOUNT_ARGS + RECORD_ARGS - 1])
    return (
        len(call.keys) == ACCOUNT_KEYS + RECORD_KEYS + held
        and len(call.args) == ACCOUNT_ARGS + RECORD_ARGS + 2 * held
    )


def merge_settlements(calls: list[Call]) -> list[Call]:
    """The batch with each account's settlements in one call, where the account has several;
    the order of the rest is kept."""
    groups: dict[tuple[str, Durable], list[Call]] = {}
    order: list[Call | list[Call]] = []
    for call in calls:
        if call.future.done() or not _is_settlement(call.script) or not _one_record(call):
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
        keys += call.keys[ACCOUNT_KEYS:]
        args += call.args[ACCOUNT_ARGS:]
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
