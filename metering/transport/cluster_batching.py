"""The request path's script calls on a Redis Cluster: one ScriptBatcher per master.

Every script's keys share one slot (an account's hash tag), so a call goes to the batcher of the
master that owns its first key's slot, by the slot map redis-py's cluster client keeps: each loop
turn writes one batch per master, as on a single Redis it writes one batch.

The map can be stale: after a failover (a replica promoted) or while slots move (resharding) a
master answers MOVED or ASK, or a dead master's connection fails. Such a call is sent again
through redis-py's cluster client, which follows MOVED and ASK, refreshes its map and retries on
a new master; the next calls then go to the new owner's batcher. A script the new master does not
have yet (NOSCRIPT) is loaded on every master and the call sent again. Every script on this path
is idempotent on its generation id, so a call that reaches Redis twice changes nothing twice.
"""

import asyncio
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    NoScriptError,
    RedisClusterException,
    TryAgainError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from metering.transport.batch_calls import Call, Durable, NotSent
from metering.transport.batching import ScriptBatcher

if TYPE_CHECKING:
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.commands.core import AsyncScript

# What a call may meet when the slot map is stale or a master died: sent again through the
# cluster client (AskError covers MovedError).
_RESEND = (AskError, ClusterDownError, TryAgainError, ConnectionError, RedisClusterException)
REPLICAS_AGE = 5.0  # seconds a master's count of replicas online is trusted


class ClusterScriptBatcher:
    def __init__(
        self,
        cluster: "RedisCluster",
        *,
        timeout: float,
        alone: Callable[[], bool] | None = None,
        replica_wait_ms: int = 100,
        merge: Callable[[list[Call]], list[Call]] | None = None,
    ) -> None:
        """`cluster`: a redis-py cluster client (its slot map routes the calls). `timeout`,
        `alone`, `replica_wait_ms` and `merge` as for ScriptBatcher, per master."""
        self._merge = merge
        self._replica_wait_ms = replica_wait_ms
        self._cluster = cluster
        self._timeout = timeout
        self._alone = alone
        self._batchers: dict[str, ScriptBatcher] = {}
        self._replicas: dict[str, tuple[int, float]] = {}  # master -> (replicas online, when)
        self._asking: dict[str, asyncio.Future[None]] = {}
        self._resending: set[asyncio.Future[Any]] = set()
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
        """As ScriptBatcher.submit; `keys[0]` decides the master. A durable call is answered
        once one of the master's replicas confirmed it (ScriptBatcher's WAIT); sent again
        through the cluster client, it is confirmed no more (rare: a stale slot map)."""
        if self._closed:
            raise NotSent("the gateway is closing its redis connections")
        loop = asyncio.get_running_loop()
        deadline = None if bound is None else loop.time() + bound
        slot = key_slot(keys[0].encode())
        try:
            node = self._cluster.nodes_manager.get_node_from_slot(slot)
        except RedisClusterException:  # a slot no master serves now: the cluster client's turn
            return self._resend(script, keys, args, deadline)
        first = self._batcher(node).submit(script, keys, args, bound, sent, durable)
        answer: asyncio.Future[Any] = loop.create_future()
        first.add_done_callback(partial(self._first_done, answer, script, keys, args, deadline))
        return answer

    def _batcher(self, node: "ClusterNode") -> ScriptBatcher:
        batcher = self._batchers.get(node.name)
        if batcher is None:
            connect = partial(node.connection_class, **node.connection_kwargs)
            batcher = ScriptBatcher(
                connect,
                timeout=self._timeout,
                alone=self._alone,
                replicas=partial(self._replicas_of, node),
                replica_wait_ms=self._replica_wait_ms,
                merge=self._merge,
            )
            self._batchers[node.name] = batcher
        return batcher

    def _replicas_of(self, node: "ClusterNode") -> int:
        """The master's replicas online, as it said at most REPLICAS_AGE seconds ago (asked
        again in the background when older; 0 until it first answered). Not from the slot map:
        a replica that has no data yet is left out of it, and it is not refreshed while all
        goes well."""
        count, asked = self._replicas.get(node.name, (0, -REPLICAS_AGE))
        if time.monotonic() - asked >= REPLICAS_AGE and node.name not in self._asking:
            task = asyncio.ensure_future(self._ask_replicas(node))
            self._asking[node.name] = task
            task.add_done_callback(lambda _: self._asking.pop(node.name, None))
        return count

    async def _ask_replicas(self, node: "ClusterNode") -> None:
        try:
            info = await node.execute_command("INFO", "replication")
        except Exception:  # a master gone: its batcher is not used until it is back
            return
        online = int(info.get("connected_slaves", 0)) if isinstance(info, dict) else 0
        self._replicas[node.name] = (online, time.monotonic())

    def _first_done(
        self,
        answer: "asyncio.Future[Any]",
        script: "AsyncScript",
        keys: Sequence[str],
        args: Sequence[Any],
        deadline: float | None,
        first: "asyncio.Future[Any]",
    ) -> None:
        if answer.done():
            return
        if first.cancelled():
            answer.cancel()
            return
        exc = first.exception()
        if exc is None:
            answer.set_result(first.result())
        elif isinstance(exc, _RESEND) and not isinstance(exc, RedisTimeoutError | NotSent):
            again = self._resend(script, keys, args, deadline)
            again.add_done_callback(partial(_copy, answer))
        else:
            answer.set_exception(exc)

    def _resend(
        self,
        script: "AsyncScript",
        keys: Sequence[str],
        args: Sequence[Any],
        deadline: float | None,
    ) -> "asyncio.Future[Any]":
        task = asyncio.ensure_future(self._via_cluster(script, keys, args, deadline))
        self._resending.add(task)
        task.add_done_callback(self._resending.discard)
        return task

    async def _via_cluster(
        self,
        script: "AsyncScript",
        keys: Sequence[str],
        args: Sequence[Any],
        deadline: float | None,
    ) -> Any:
        """Through redis-py's cluster client (MOVED, ASK, failover), within what is left of the
        caller's bound; a script the master lacks is loaded on every master first."""
        loop = asyncio.get_running_loop()
        left = None if deadline is None else deadline - loop.time()
        if left is not None and left <= 0:
            raise RedisTimeoutError("redis did not answer within the bound")
        started = time.monotonic()
        try:
            async with asyncio.timeout(left):
                command = ("EVALSHA", script.sha, len(keys), *keys, *args)
                try:
                    return await self._cluster.execute_command(*command)
                except NoScriptError:
                    await self._cluster.script_load(script.script)
                    return await self._cluster.execute_command(*command)
        except TimeoutError:
            waited = time.monotonic() - started
            raise RedisTimeoutError(f"redis did not answer within {waited:.2f} s") from None
        except RedisClusterException as exc:  # no node reachable, a slot with no master
            raise ConnectionError(f"the cluster cannot take it now: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        self._closed = True
        for task in [*self._resending, *self._asking.values()]:
            task.cancel()
        for batcher in self._batchers.values():
            await batcher.aclose()
        self._batchers.clear()


def _copy(answer: "asyncio.Future[Any]", done: "asyncio.Future[Any]") -> None:
    if answer.done():
        return
    if done.cancelled():
        answer.cancel()
    elif done.exception() is not None:
        answer.set_exception(done.exception())  # type: ignore[arg-type]
    else:
        answer.set_result(done.result())
